import pytest

from deepfleet.weights.sources import Source, SourceError, parse_source


@pytest.mark.parametrize(
    ("text", "kind", "repo", "revision"),
    [
        ("bundled", "bundled", "", None),
        ("hf://deepseek-ai/DeepSeek-R1", "hf", "deepseek-ai/DeepSeek-R1", None),
        ("hf://deepseek-ai/DeepSeek-R1@main", "hf", "deepseek-ai/DeepSeek-R1", "main"),
        ("hf://a/b@refs/pr/1", "hf", "a/b", "refs/pr/1"),
        ("modelscope://Qwen/Qwen2-7B@v1.0", "modelscope", "Qwen/Qwen2-7B", "v1.0"),
        ("deepseek-ai/DeepSeek-R1", "hub_id", "deepseek-ai/DeepSeek-R1", None),
        ("DeepSeek-R1", "hub_id", "DeepSeek-R1", None),
    ],
)
def test_parses(text: str, kind: str, repo: str, revision: str | None) -> None:
    s = parse_source(text)
    assert (s.kind, s.repo, s.revision) == (kind, repo, revision)
    assert str(s) == text


def test_local_folder() -> None:
    s = parse_source("/models/x")
    assert s.kind == "local" and str(s.path) == "/models/x" and not s.pullable


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hf://bad", "hf://org/name"),
        ("hf://a/b@", "revision"),
        ("s3://a/b", "unknown scheme"),
        ("a b", "expected `bundled`"),
        ("modelscope://a/b/c", "modelscope://org/name"),
    ],
)
def test_rejects_with_the_expected_form(text: str, says: str) -> None:
    with pytest.raises(SourceError, match=says):
        parse_source(text)


def test_with_revision_overrides() -> None:
    assert parse_source("hf://a/b@x").with_revision("y") == Source("hf", "a/b", "y")
    assert parse_source("hf://a/b@x").with_revision(None).revision == "x"
