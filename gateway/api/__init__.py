"""The gateway's API edge: gRPC and HTTP servers, their errors and limits, bearer-token checks.

It only translates: requests into ``gateway.application`` calls, results into
protobuf or JSON, ``GatewayError`` into a gRPC status or an HTTP error.
"""
