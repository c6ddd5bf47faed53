"""Model sources: where an InferenceEndpoint's weights come from (`spec.model.uri`).

Owns: the one grammar of `model.uri` (the CRD pattern and the parser are built from the same
per-scheme expressions, so the API server and the operator accept the same strings), the typed
sources the renderers work with, and the error that names the field and the allowed forms:

    hf://org/repo[@revision]    a Hugging Face Hub repository (the default: hf://<model.name>)
    s3://bucket/prefix          an S3 bucket (or S3-compatible store)
    gs://bucket/prefix          a Google Cloud Storage bucket
    pvc://claim/path            a PersistentVolumeClaim in the endpoint's namespace

Must not: know engines, Kubernetes objects or credentials (what reads a source is
`tidal.render.engines`), do IO, or import any other Tidal module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MODEL_URI_FORMS",
    "MODEL_URI_PATTERN",
    "HubSource",
    "ModelSource",
    "ModelURIError",
    "ObjectStoreSource",
    "PVCSource",
    "model_source",
    "parse_model_uri",
]

FIELD: Final = "spec.model.uri"
MODEL_URI_FORMS: Final = (
    "hf://org/repo[@revision], s3://bucket/prefix, gs://bucket/prefix or pvc://claim/path"
)

# RE2-compatible (no look-arounds): the API server evaluates the union as the CRD's pattern.
# A Hub repo id is `[namespace/]name` (letters, digits, `-._`); a revision is a branch, tag or
# commit, and branches may contain `/` (`refs/pr/2`).
_HUB_NAME = r"[A-Za-z0-9][-._A-Za-z0-9]*"
_HF = rf"hf://(?P<repo>(?:{_HUB_NAME}/)?{_HUB_NAME})(?:@(?P<revision>[A-Za-z0-9][-._/A-Za-z0-9]*))?"
# S3 bucket names: 3-63 lower-case letters, digits, `.` and `-`; GCS also allows `_` and, with
# dots, up to 222 characters. Keys and paths: printable ASCII without spaces (`[!-~]`, which
# Python and RE2 read alike, where `\S` differs on non-ASCII whitespace).
_S3 = r"s3://(?P<bucket>[a-z0-9][-.a-z0-9]{1,61}[a-z0-9])(?:/(?P<prefix>[!-~]*))?"
_GS = r"gs://(?P<bucket>[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9])(?:/(?P<prefix>[!-~]*))?"
# A claim name is a DNS-1123 subdomain (at most 253 characters).
_PVC = (
    r"pvc://(?P<claim>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)"
    r"(?:/(?P<path>[!-~]*))?"
)
_FORMS: Final = {"hf": _HF, "s3": _S3, "gs": _GS, "pvc": _PVC}
_GROUP_NAME = re.compile(r"\?P<[a-z]+>")

# The CRD's pattern: the same expressions, without Python's named groups (RE2 spells them
# differently), anchored as one alternation.
MODEL_URI_PATTERN: Final = (
    "^(" + "|".join(_GROUP_NAME.sub("?:", form) for form in _FORMS.values()) + ")$"
)
_MAX_CLAIM = 253


class ModelURIError(ValueError):
    """`spec.model.uri` (or the Hub default derived from `model.name`) is not a model source.

    A ValueError, so a pydantic validator raising it reports the field like any other."""


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face Hub repository, at `revision` (a branch, tag or commit) when given."""

    repo: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        return f"hf://{self.repo}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class ObjectStoreSource:
    """A prefix (a "directory" of objects) in an S3 or GCS bucket; empty: the whole bucket."""

    scheme: Literal["s3", "gs"]
    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        """The URI in the form the engines and tools that read it take."""
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


@dataclass(frozen=True)
class PVCSource:
    """A directory on a PersistentVolumeClaim: `path` relative to the volume's root ('' = root)."""

    claim: str
    path: str = ""

    @property
    def uri(self) -> str:
        return f"pvc://{self.claim}" + (f"/{self.path}" if self.path else "")


ModelSource = HubSource | ObjectStoreSource | PVCSource


def parse_model_uri(uri: str) -> ModelSource:
    """The source `uri` names; ModelURIError naming `spec.model.uri` and the forms otherwise."""
    scheme, separator, _ = uri.partition("://")
    form = _FORMS.get(scheme) if separator else None
    if form is None:
        raise _error(uri, "has no supported scheme")
    match = re.fullmatch(form, uri)
    if match is None:
        raise _error(uri, _why(scheme))
    groups = match.groupdict()
    if scheme == "hf":
        return HubSource(repo=groups["repo"], revision=groups["revision"])
    if scheme == "pvc":
        path = (groups["path"] or "").strip("/")
        if len(groups["claim"]) > _MAX_CLAIM:
            raise _error(uri, f"names a claim longer than {_MAX_CLAIM} characters")
        if any(part in (".", "..") for part in path.split("/")):
            raise _error(uri, "has a path that leaves the volume ('.' or '..')")
        return PVCSource(claim=groups["claim"], path=path)
    store: Literal["s3", "gs"] = "s3" if scheme == "s3" else "gs"
    return ObjectStoreSource(
        scheme=store, bucket=groups["bucket"], prefix=(groups["prefix"] or "").strip("/")
    )


def model_source(uri: str | None, name: str) -> ModelSource:
    """The source of a model: `uri`, else the Hub repository named like the model (`name`)."""
    if uri is not None:
        return parse_model_uri(uri)
    try:
        return parse_model_uri(f"hf://{name}")
    except ModelURIError:
        raise ModelURIError(
            f"{FIELD} is unset, so the weights would come from hf://{name}, but model.name "
            f"{name!r} is not a Hugging Face repo id: set {FIELD} to {MODEL_URI_FORMS}"
        ) from None


def _why(scheme: str) -> str:
    if scheme == "hf":
        return (
            "is not a Hub repo id ([org/]repo, letters, digits and -._) with an optional @revision"
        )
    if scheme == "pvc":
        return "does not name a claim (a DNS-1123 name) and a path (printable ASCII, no spaces)"
    return (
        "does not name a bucket (3-63 lower-case letters, digits, '.' or '-') and a prefix "
        "(printable ASCII, no spaces)"
    )


def _error(uri: str, why: str) -> ModelURIError:
    return ModelURIError(f"{FIELD} {uri!r} {why}: use {MODEL_URI_FORMS}")
