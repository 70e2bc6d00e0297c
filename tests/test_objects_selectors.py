"""hypernetes.objects.selectors against upstream: the cases of k8s.io/apimachinery's
pkg/labels/selector_test.go (string form) and pkg/apis/meta/v1/helpers_test.go
(metav1.LabelSelector), and the API server's `labelSelector=` through the real kubectl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypernetes.api.schema.printers import selector_string as printer_selector
from hypernetes.api.selectors import parse_label_selector
from hypernetes.api.status import ApiError
from hypernetes.objects.selectors import (
    DOES_NOT_EXIST,
    EQUALS,
    EXISTS,
    IN,
    NOT_IN,
    Requirement,
    SelectorError,
    format_label_selector,
    from_label_selector,
    parse_selector,
    selector_matches,
    selector_string,
)
from tests.support.apifixtures import have_kubectl
from tests.support.apiserver import ApiServerThread

# TestSelectorParse: good strings re-print as themselves without spaces
GOOD = ["x=a,y=b,z=c", "", "x!=a,y=b", "x=", "x= ", "x=,z= ", "x= ,z= ", "!x", "x>1", "x>1,z<5"]
BAD = ["x=a||y=b", "x==a==b", "!x=a", "x<a"]


@pytest.mark.parametrize("text", GOOD)
def test_good_strings_reprint(text: str) -> None:
    assert str(parse_selector(text)) == text.replace(" ", "")


@pytest.mark.parametrize("text", BAD)
def test_bad_strings(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_deterministic_parse() -> None:
    assert str(parse_selector("x=a,a=x")) == str(parse_selector("a=x,x=a")) == "a=x,x=a"


# TestSelectorMatches
@pytest.mark.parametrize(
    ("text", "labels", "match"),
    [
        ("", {"x": "y"}, True),
        ("x=y", {"x": "y"}, True),
        ("x=y,z=w", {"x": "y", "z": "w"}, True),
        ("x!=y,z!=w", {"x": "z", "z": "a"}, True),
        ("notin=in", {"notin": "in"}, True),
        ("x", {"x": "z"}, True),
        ("!x", {"y": "z"}, True),
        ("x>1", {"x": "2"}, True),
        ("x<1", {"x": "0"}, True),
        ("x=z", {}, False),
        ("x=y", {"x": "z"}, False),
        ("x=y,z=w", {"x": "w", "z": "w"}, False),
        ("x!=y,z!=w", {"x": "z", "z": "w"}, False),
        ("x", {"y": "z"}, False),
        ("!x", {"x": "z"}, False),
        ("x>1", {"x": "0"}, False),
        ("x<1", {"x": "2"}, False),
        ("foo=bar,baz=blah", {"foo": "bar", "baz": "blah"}, True),
        ("foo=bar,foobar=bar,baz=blah", {"foo": "bar", "baz": "blah"}, False),
        # TestRequirementSelectorMatching
        ("x in (foo),y notin (alpha)", {"x": "foo", "y": "baz"}, True),
        ("x in (foo),y in (alpha)", {"x": "foo", "y": "baz"}, False),
        ("x notin (),y", {"y": ""}, True),
        ("!x,y", {"y": ""}, True),
        ("x notin (),!y", {"y": ""}, False),
        ("x in ()", {"y": "baz"}, False),
        ("z>1", {"z": "2"}, True),
        ("z>1", {"z": "v2"}, False),
    ],
)
def test_matches(text: str, labels: dict[str, str], match: bool) -> None:
    assert parse_selector(text).matches(labels) is match


# TestSetSelectorParser: input -> the requirements (sorted by key), or None if invalid
SET_PARSER: list[tuple[str, list[tuple[str, str, tuple[str, ...]]] | None]] = [
    ("", []),
    ("\rx", [("x", EXISTS, ())]),
    ("this-is-a-dns.domain.com/key-with-dash", [("this-is-a-dns.domain.com/key-with-dash", EXISTS, ())]),
    (
        "this-is-another-dns.domain.com/key-with-dash in (so,what)",
        [("this-is-another-dns.domain.com/key-with-dash", IN, ("so", "what"))],
    ),
    (
        "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
        [("0.1.2.domain/99", NOT_IN, ("10.10.100.1", "tick.tack.clock"))],
    ),
    ("foo  in\t (abc)", [("foo", IN, ("abc",))]),
    ("x notin\n (abc)", [("x", NOT_IN, ("abc",))]),
    ("x  notin\t\t\t(abc,def)", [("x", NOT_IN, ("abc", "def"))]),
    ("x in (abc,)", [("x", IN, ("", "abc"))]),
    ("x in (abc,abc)", [("x", IN, ("abc",))]),
    ("x in ()", [("x", IN, ("",))]),
    ("x in (a,,)", [("x", IN, ("", "a"))]),
    ("x in (a,,,,,,)", [("x", IN, ("", "a"))]),
    ("x in (a,,a,,a,,a,,)", [("x", IN, ("", "a"))]),
    (
        "x notin (abc,,def),bar,z in (),w",
        [("bar", EXISTS, ()), ("w", EXISTS, ()), ("x", NOT_IN, ("", "abc", "def")), ("z", IN, ("",))],
    ),
    ("x,y in (a)", [("x", EXISTS, ()), ("y", IN, ("a",))]),
    ("x=a,y!=b,z in (h,i,j)", [("x", EQUALS, ("a",)), ("y", "!=", ("b",)), ("z", IN, ("h", "i", "j"))]),
    ("x notin ( )", [("x", NOT_IN, ("",))]),
    ("x notin (, a)", [("x", NOT_IN, ("", "a"))]),
    ("a ", [("a", EXISTS, ())]),
    ("a in (x,y,notin, z,in)", [("a", IN, ("in", "notin", "x", "y", "z"))]),
    ("x=a||y=b", None),
    ("x,,y", None),
    (",x,y", None),
    ("x nott in (y)", None),
    ("a in (xyz),", None),
    ("a in (xyz)b notin ()", None),
    ("a in (xyz abc)", None),
    ("a notin(", None),
    ("a (", None),
    ("(", None),
]


@pytest.mark.parametrize(("text", "want"), SET_PARSER)
def test_set_selector_parser(text: str, want: list[tuple[str, str, tuple[str, ...]]] | None) -> None:
    if want is None:
        with pytest.raises(SelectorError):
            parse_selector(text)
        return
    got = [(r.key, r.op, r.values) for r in parse_selector(text).requirements]
    assert got == want


def test_to_string() -> None:
    """TestToString: values sorted on output, operators spelled as upstream."""
    reqs = [
        Requirement.new("x", NOT_IN, ["def", "abc"]),
        Requirement.new("y", "!=", ["jkl"]),
        Requirement.new("z", DOES_NOT_EXIST),
    ]
    assert ",".join(map(str, reqs)) == "x notin (abc,def),y!=jkl,!z"
    assert str(parse_selector("x=abc,y==jkl,z!=a,z")) == "x=abc,y==jkl,z!=a,z"
    assert str(parse_selector("y<8,x>2,z")) == "x>2,y<8,z"
    assert str(parse_selector("z notin ()")) == "z notin ()"


def test_requirement_constructor_checks_keys_values_and_counts() -> None:
    for key, op, values in [
        ("x1", IN, []),
        ("x2", NOT_IN, []),
        ("x3", EXISTS, ["a"]),
        ("x4", "=", ["a", "b"]),
        ("x5", "gt", ["a"]),
        ("x6", "gt", ["1", "2"]),
        ("x/y/z", EXISTS, []),
        ("-x", EXISTS, []),
        ("x" * 64, EXISTS, []),
        ("x", IN, ["a b"]),
        ("x", "~", ["a"]),
    ]:
        with pytest.raises(SelectorError):
            Requirement.new(key, op, values)
    assert Requirement.new("example.com/x", IN, ["", "a"]).values == ("", "a")


# -- metav1.LabelSelector ------------------------------------------------------------------------

MATCH_LABELS = {"foo": "bar"}
EXPRESSIONS = [{"key": "baz", "operator": "In", "values": ["qux", "norf"]}]


def test_label_selector_as_selector() -> None:
    """TestLabelSelectorAsSelector, and what FormatLabelSelector prints for each."""
    nothing = from_label_selector(None)
    assert nothing.nothing and not nothing.matches({}) and str(nothing) == ""
    everything = from_label_selector({})
    assert everything.empty and everything.matches({"a": "b"})
    assert selector_string({"matchLabels": MATCH_LABELS}) == "foo=bar"
    assert selector_string({"matchExpressions": EXPRESSIONS}) == "baz in (norf,qux)"
    assert (
        selector_string({"matchLabels": MATCH_LABELS, "matchExpressions": EXPRESSIONS})
        == "baz in (norf,qux),foo=bar"
    )
    with pytest.raises(SelectorError):
        from_label_selector({"matchExpressions": [{"key": "baz", "operator": "Exists", "values": ["qux"]}]})
    with pytest.raises(SelectorError, match="not a valid label selector operator"):
        from_label_selector({"matchExpressions": [{"key": "baz", "operator": "Gt", "values": ["1"]}]})
    assert [format_label_selector(s) for s in (None, {}, {"matchLabels": MATCH_LABELS})] == [
        "<none>",
        "<none>",
        "foo=bar",
    ]
    assert format_label_selector({"matchExpressions": [{"key": "k", "operator": "Nope"}]}) == "<error>"
    assert printer_selector({"matchExpressions": EXPRESSIONS}) == "baz in (norf,qux)"


def test_selector_matches_a_workload_selector() -> None:
    sel = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert selector_matches(sel, {"app": "web", "tier": "a"})
    assert not selector_matches(sel, {"app": "web", "tier": "c"})
    assert not selector_matches(sel, {"app": "web", "tier": "a", "canary": "1"})
    assert not selector_matches(None, {"app": "web"})  # a missing selector selects nothing
    assert selector_matches({}, {"anything": "x"})  # an empty one everything
    assert not selector_matches({"matchExpressions": [{"key": "k", "operator": "Nope"}]}, {"k": "v"})
    # keys sorted, as upstream's Add: matchExpressions interleave with matchLabels
    assert selector_string(sel) == "app=web,!canary,tier in (a,b)"


def test_the_api_answers_bad_label_selectors_with_400() -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector("x==a==b")
    assert err.value.code == 400 and "expected: ',' or 'end of string'" in err.value.message


@pytest.mark.skipif(not have_kubectl(), reason="kubectl 1.32 is not installed")
def test_kubectl_lists_by_set_based_selectors(tmp_path: Path) -> None:
    """`kubectl get -l` with set-based and exists requirements, served by the API server."""
    api = ApiServerThread(tmp_path).start()
    try:
        for name, labels in (("a", {"tier": "front"}), ("b", {"tier": "back", "canary": "1"}), ("c", {})):
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}
            api.kubectl("apply", "-f", "-", input=json.dumps(cm))

        def names(selector: str) -> list[str]:
            out = api.kubectl("get", "configmaps", "-l", selector, "-o", "json").stdout
            return sorted(
                i["metadata"]["name"]
                for i in json.loads(out)["items"]
                if i["metadata"]["name"] != "kube-root-ca.crt"
            )

        assert names("tier in (front,back),!canary") == ["a"]
        assert names("tier notin (front)") == ["b", "c"]
        assert names("tier") == ["a", "b"]
        proc = api.kubectl("get", "configmaps", "-l", "tier in (front", check=False)
        assert proc.returncode != 0 and "unable to parse requirement" in proc.stderr
    finally:
        api.stop()
