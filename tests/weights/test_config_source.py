import pytest

from deepfleet.config import ConfigError, load
from deepfleet.weights.sources import Source


def _load(tmp_path, source: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "fleet.yaml"
    f.write_text(f"models:\n  - name: m\n    source: {source!r}\n")
    return load(f)


@pytest.mark.parametrize(
    ("source", "says"),
    [("hf://bad", "hf://org/name"), ("s3://a/b", "unknown scheme"), ("a b", "expected")],
)
def test_a_bad_source_names_its_field(tmp_path, source: str, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, source)
    [problem] = err.value.problems
    assert problem.startswith("models[0].source:") and says in problem


def test_hub_sources_are_pulled_others_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _load(tmp_path, "hf://org/m@v1").models[0].weights_source == Source("hf", "org/m", "v1")
    assert _load(tmp_path, "org/m").models[0].weights_source is None
    assert _load(tmp_path, "bundled").models[0].weights_source is None
