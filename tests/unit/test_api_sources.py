"""Model sources (tidal.api.sources): the one grammar of `spec.model.uri`, parsed and refused
with the field and the allowed forms named."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.sources import (
    MODEL_URI_FORMS,
    MODEL_URI_PATTERN,
    HubSource,
    ModelURIError,
    ObjectStoreSource,
    PVCSource,
    model_source,
    parse_model_uri,
)


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("hf://meta-llama/Llama-3.1-8B-Instruct", HubSource("meta-llama/Llama-3.1-8B-Instruct")),
        ("hf://gpt2", HubSource("gpt2")),
        ("hf://org/repo@0e9e39f", HubSource("org/repo", "0e9e39f")),
        ("hf://org/repo@refs/pr/2", HubSource("org/repo", "refs/pr/2")),
        ("s3://models-eu/llama/8b", ObjectStoreSource("s3", "models-eu", "llama/8b")),
        ("s3://models-eu/llama/8b/", ObjectStoreSource("s3", "models-eu", "llama/8b")),
        ("s3://models-eu", ObjectStoreSource("s3", "models-eu", "")),
        ("gs://my_models.example/llama", ObjectStoreSource("gs", "my_models.example", "llama")),
        ("pvc://weights/llama-8b", PVCSource("weights", "llama-8b")),
        ("pvc://weights", PVCSource("weights", "")),
        ("pvc://weights/a/b/", PVCSource("weights", "a/b")),
    ],
)
def test_each_form_parses_to_its_source(uri: str, source: object) -> None:
    assert parse_model_uri(uri) == source
    assert re.fullmatch(MODEL_URI_PATTERN, uri)


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("ftp://x", "has no supported scheme"),
        ("hf:/org/repo", "has no supported scheme"),
        ("https://huggingface.co/org/repo", "has no supported scheme"),
        ("hf://", "is not a Hub repo id"),
        ("hf://org/repo/extra", "is not a Hub repo id"),
        ("hf://org/repo@", "is not a Hub repo id"),
        ("hf://org/re po", "is not a Hub repo id"),
        ("s3://", "does not name a bucket"),
        ("s3://UPPER/x", "does not name a bucket"),
        ("s3://ab/x", "does not name a bucket"),
        ("gs://bucket/with space", "does not name a bucket"),
        ("pvc://Claim/x", "does not name a claim"),
        ("pvc:///x", "does not name a claim"),
    ],
)
def test_what_is_not_a_source_is_refused_naming_the_field_and_the_forms(uri: str, why: str) -> None:
    with pytest.raises(ModelURIError) as caught:
        parse_model_uri(uri)
    message = str(caught.value)
    assert message.startswith(f"spec.model.uri {uri!r} {why}")
    assert message.endswith(f": use {MODEL_URI_FORMS}")
    # The API server refuses the same strings: the CRD's pattern is built from the same forms.
    assert not re.fullmatch(MODEL_URI_PATTERN, uri)


def test_a_path_that_leaves_the_volume_is_refused_by_the_parser() -> None:
    # The pattern cannot say "no '..' segment" without look-arounds; the operator's parser does.
    with pytest.raises(ModelURIError, match=r"spec\.model\.uri 'pvc://w/\.\./etc' has a path"):
        parse_model_uri("pvc://w/../etc")


def test_the_default_is_the_hub_repo_named_like_the_model() -> None:
    assert model_source(None, "Qwen/Qwen2.5-7B-Instruct") == HubSource("Qwen/Qwen2.5-7B-Instruct")
    assert model_source("pvc://w/m", "anything goes") == PVCSource("w", "m")


def test_a_model_name_that_is_not_a_repo_id_needs_a_uri() -> None:
    with pytest.raises(ModelURIError) as caught:
        model_source(None, "llama 3:latest")
    message = str(caught.value)
    assert message.startswith("spec.model.uri is unset, so the weights would come from")
    assert "'llama 3:latest' is not a Hugging Face repo id" in message
    assert message.endswith(MODEL_URI_FORMS)


def test_every_source_prints_back_as_the_uri_it_came_from() -> None:
    for uri in ("hf://org/repo@main", "s3://bucket/p", "gs://bucket", "pvc://claim/a/b"):
        assert parse_model_uri(uri).uri == uri


_NAME = st.from_regex(r"[A-Za-z0-9][-._A-Za-z0-9]{0,20}", fullmatch=True)


@given(org=_NAME, repo=_NAME, revision=st.none() | _NAME)
def test_the_pattern_and_the_parser_agree_on_hub_ids(
    org: str, repo: str, revision: str | None
) -> None:
    uri = f"hf://{org}/{repo}" + (f"@{revision}" if revision else "")
    assert parse_model_uri(uri) == HubSource(f"{org}/{repo}", revision)
    assert re.fullmatch(MODEL_URI_PATTERN, uri)


@given(uri=st.text(max_size=40))
def test_the_pattern_accepts_nothing_the_parser_refuses_but_dot_segments(uri: str) -> None:
    try:
        parse_model_uri(uri)
    except ModelURIError as exc:
        if "leaves the volume" not in str(exc):
            assert not re.fullmatch(MODEL_URI_PATTERN, uri)
    else:
        assert re.fullmatch(MODEL_URI_PATTERN, uri)
