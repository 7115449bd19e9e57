"""Property tests (hypothesis): whatever a manifest, a file name, an option or a question holds, the
answer is a value or the documented error, never another exception."""

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgelmm import options
from edgelmm.bundle_format import MANIFEST, BundleError, Manifest, load_manifest, resolve_inside
from edgelmm.chat import IMAGE, USER_CLOSE, USER_OPEN, ChatFormat, UserText
from edgelmm.errors import UserError
from edgelmm.runtime.model import default_model

# The same examples on every run, so that the suite passes or fails alike on each machine; exploring
# further is benchmarks/fuzz.py's job (HYPOTHESIS_PROFILE=explore draws new examples).
settings.register_profile("suite", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "suite"))

DEMO = json.loads((default_model() / MANIFEST).read_text())
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def _paths(data, prefix=()):
    """Every path to a value inside nested dicts and lists."""
    yield prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


PATHS = [p for p in _paths(DEMO) if p]


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(PATHS), value=JSON, drop=st.booleans())
def test_a_manifest_with_any_field_changed_is_read_or_refused(where, value, drop):
    data = copy.deepcopy(DEMO)
    target = data
    for key in where[:-1]:
        target = target[key]
    if drop and isinstance(target, dict):
        del target[where[-1]]
    else:
        target[where[-1]] = value
    try:
        Manifest.from_dict(data)
    except BundleError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_manifest_file_is_read_or_refused(content, tmp_path):
    (tmp_path / MANIFEST).write_bytes(content)
    try:
        load_manifest(tmp_path)
    except BundleError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=st.sampled_from("ab./\\\x00~:") | st.characters(), max_size=20))
def test_a_file_name_resolves_inside_the_bundle_or_is_refused(name, tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir(exist_ok=True)
    try:
        path = resolve_inside(folder, name)
    except BundleError:
        return
    assert path.is_relative_to(folder.resolve())


NUMBERS = st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | \
    st.none() | st.text(max_size=4)


@settings(max_examples=500, deadline=None)
@given(check=st.sampled_from([options.check_threads, options.check_n_ctx, options.check_max_tokens,
                              options.check_temperature, options.check_seed, options.check_budget,
                              options.check_positive, options.check_processes]), value=NUMBERS)
def test_an_option_is_a_value_in_range_or_one_user_error(check, value):
    try:
        checked = check(value)
    except UserError as e:
        assert "\n" not in str(e)
        return
    if checked is not None:
        assert not isinstance(checked, bool) and math.isfinite(checked) and checked >= 0


@settings(max_examples=200, deadline=None)
@given(flag=st.sampled_from(["--temperature", "--threads", "--max-tokens", "--ttft-budget", "--ctx"]),
       value=st.text(max_size=8) | st.floats().map(repr) | st.integers().map(str))
def test_a_runtime_flag_is_a_value_or_a_usage_error(flag, value):
    import click

    from edgelmm.cli.runtime import ask

    try:
        ask.make_context("ask", ["photo.jpg", "Hi?", flag, value], resilient_parsing=False)
    except click.UsageError:  # BadParameter is one; the CLI prints it as one line and exits 2
        pass


FORMAT = ChatFormat("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}<|assistant|>\n")


@settings(max_examples=300, deadline=None)
@given(questions=st.lists(st.text(max_size=30), min_size=1, max_size=3), answer=st.text(max_size=20))
def test_user_text_stays_user_text_whatever_it_holds(questions, answer):
    turns = [(q, answer) for q in questions[:-1]] + [(questions[-1], None)]
    pieces = FORMAT.pieces(FORMAT.render_marked(turns))
    assert pieces.count(IMAGE) == 1  # only the template's placeholder
    said = [p for p in pieces if isinstance(p, UserText)]
    expected = [t for q, a in turns for t in ((q, a) if a is not None else (q,))]
    strip = lambda t: t.replace(USER_OPEN, "").replace(USER_CLOSE, "")  # noqa: E731
    assert [str(s) for s in said] == [strip(t) for t in expected if strip(t)]
    assert all(USER_OPEN not in p and USER_CLOSE not in p for p in pieces if p is not IMAGE)
