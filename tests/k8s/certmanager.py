"""cert-manager's Issuer and Certificate (cert-manager.io/v1), checked without the CRDs.

kubernetes-validate bundles the core API's schemas only; these cover the fields of the
cert-manager v1 API that choreo's manifests use (names as in cert-manager's CRDs), strictly:
a misspelt field fails as it would when the API server validates against the CRD.
"""

from __future__ import annotations

from typing import Any

import jsonschema

API_VERSION = "cert-manager.io/v1"

_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object"},
        "annotations": {"type": "object"},
    },
    "additionalProperties": False,
}
_ISSUER_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"type": "string"},
    },
    "additionalProperties": False,
}
_USAGES = ["digital signature", "key encipherment", "server auth", "client auth", "cert sign", "crl sign"]
_CERTIFICATE_SPEC = {
    "type": "object",
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": {"type": "string"},
        "issuerRef": _ISSUER_REF,
        "isCA": {"type": "boolean"},
        "commonName": {"type": "string", "maxLength": 64},
        "duration": {"type": "string", "pattern": r"^\d+h$"},
        "renewBefore": {"type": "string", "pattern": r"^\d+h$"},
        "dnsNames": {"type": "array", "items": {"type": "string"}},
        "ipAddresses": {"type": "array", "items": {"type": "string"}},
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "privateKey": {
            "type": "object",
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "rotationPolicy": {"enum": ["Never", "Always"]},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_ISSUER_SPEC = {
    "type": "object",
    "properties": {
        "selfSigned": {"type": "object", "additionalProperties": False},
        "ca": {
            "type": "object",
            "required": ["secretName"],
            "properties": {"secretName": {"type": "string"}},
            "additionalProperties": False,
        },
    },
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}


def _schema(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"type": "string"},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


SCHEMAS = {"Certificate": _schema(_CERTIFICATE_SPEC), "Issuer": _schema(_ISSUER_SPEC)}


def is_cert_manager(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("cert-manager.io/")


def validate(obj: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError (or KeyError for an unknown kind)."""
    jsonschema.validate(obj, SCHEMAS[obj["kind"]])


def certificate_secrets(objects: list[dict[str, Any]], *, leaves_only: bool = False) -> set[str]:
    """The Secrets cert-manager writes for the rendered Certificates (without the CAs': only
    Issuers read those, never a pod)."""
    return {
        o["spec"]["secretName"]
        for o in objects
        if o.get("kind") == "Certificate"
        and is_cert_manager(o)
        and not (leaves_only and o["spec"].get("isCA"))
    }
