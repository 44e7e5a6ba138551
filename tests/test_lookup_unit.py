"""Pure lookup (analysis/lookup.py) on literal layer stacks: every verdict, every marker rule."""

from __future__ import annotations

import stat

import pytest

from ovlinspect.analysis.lookup import VERDICTS, LookupContext, explain_path, lookup_path
from ovlinspect.errors import Problem
from ovlinspect.layers import DictView, Entry, ReadProblem
from ovlinspect.model import EffectiveOption, Layer, LayerRole, LayerStack


def F(n: str, size: int = 3, **kw) -> Entry:
    return Entry(n, "file", stat.S_IFREG | 0o644, size, **kw)


def D(n: str, **kw) -> Entry:
    return Entry(n, "dir", stat.S_IFDIR | 0o755, 4096, **kw)


def W(n: str) -> Entry:
    return Entry(n, "chardev", stat.S_IFCHR, 0, rdev=0)


def XW(n: str) -> Entry:
    return Entry(n, "file", stat.S_IFREG | 0o644, 0, xwhiteout=True)


def L(n: str, target: str) -> Entry:
    return Entry(n, "symlink", stat.S_IFLNK | 0o777, len(target), target=target)


def stack_of(n: int, upper: bool = True, datas: int = 0, covered: tuple[str, ...] = (), notes=None, **opts: str) -> LayerStack:
    layers = []
    for i in range(n):
        role = LayerRole.UPPER if (upper and i == 0) else LayerRole.LOWER
        layers.append(Layer(i, role, f"/l{i}", f"/l{i}", True, True))
    for _ in range(datas):
        layers.append(Layer(len(layers), LayerRole.DATA_ONLY, f"/d{len(layers)}", f"/d{len(layers)}", True, True))
    eff = {"redirect_dir": "follow", "metacopy": "off", "userxattr": "off"}
    eff.update(opts)
    return LayerStack(tuple(layers), {k: EffectiveOption(v, "mount") for k, v in eff.items()}, "literal",
                      covered=covered, layer_notes=notes or {})


def why(view: DictView, path: str, **kw):
    n = view.n_layers() - kw.get("datas", 0)
    return explain_path(stack_of(n, **kw), view, path)


def test_visible_from_lowest_and_shadows() -> None:
    v = DictView([{"a": F("a")}, {}, {"a": F("a")}])
    ex = why(v, "/a")
    assert ex.visible and ex.verdict == "visible" and ex.layer == 0 and ex.shadows == (2,)


def test_whiteout_chardev_and_xattr_and_note() -> None:
    v = DictView([{"a": W("a"), "b": XW("b")}, {"a": F("a"), "b": F("b")}])
    ex = why(v, "/a", notes={0: {"created_by": "RUN rm /a"}})
    assert (ex.visible, ex.verdict, ex.layer) == (False, "whiteout", 0)
    assert "RUN rm /a" in ex.message and "hides the copies in layers 1" in ex.message
    assert why(v, "/b").verdict == "whiteout"
    # an xattr whiteout counts for lookup even without an opaque=x parent (ovl_path_is_whiteout)
    assert why(v, "/b/c").verdict == "whiteout"


def test_opaque_y_hides_lower_but_x_and_bad_values_do_not() -> None:
    v = DictView([
        {"y": D("y", opaque="y"), "x": D("x", opaque="x"), "bad": D("bad", opaque="yes"), "e": D("e", opaque="")},
        {"y/old": F("old"), "x/old": F("old"), "bad/old": F("old"), "e/old": F("old")},
    ])
    ex = why(v, "/y/old")
    assert ex.verdict == "opaque_parent" and ex.layer == 0
    for d in ("x", "bad", "e"):
        assert why(v, f"/{d}/old").visible, d


def test_opaque_not_read_on_lowest_lower() -> None:
    # the lowest lower's opaque mark is never read (d->last): with a dir above it merges anyway
    v = DictView([{"d/top": F("top")}, {"d": D("d", opaque="y"), "d/low": F("low")}])
    assert why(v, "/d/low").visible


def test_root_opaque_is_ignored() -> None:
    v = DictView([{}, {"a": F("a")}])
    v.layers[0][()] = D(".", opaque="y")
    assert why(v, "/a").visible


def test_non_directory_replaces_directory_and_not_a_directory_parent() -> None:
    v = DictView([{"f": F("f")}, {"f/z": F("z")}])
    assert why(v, "/f/z").verdict == "shadowed_by_non_directory"
    assert why(v, "/f/nothing").verdict == "not_a_directory_parent"
    # a lower non-directory stops the merge of a directory above it
    v2 = DictView([{"d/top": F("top")}, {"d": F("d")}, {"d/deep": F("deep")}])
    ex = why(v2, "/d/deep")
    assert ex.verdict == "shadowed_by_non_directory" and ex.layer == 1, ex


def test_whiteout_of_parent_then_recreated() -> None:
    v = DictView([{"d/new": F("new")}, {"d": W("d")}, {"d/old": F("old")}])
    ex = why(v, "/d/old")
    assert ex.verdict == "whiteout" and ex.layer == 1


def test_redirect_relative_and_absolute() -> None:
    v = DictView([{"new": D("new", redirect="old")}, {"old/f": F("f")}])
    ex = why(v, "/new/f")
    assert ex.visible and ex.layer == 1
    v2 = DictView([{"x/new": D("new", redirect="/a/old")}, {"a/old/f": F("f")}])
    assert why(v2, "/x/new/f").visible
    # the old name of a moved dir: redirected_away when the upper name exists and redirects
    v3 = DictView([{"b": D("b", redirect="a")}, {"b/f": F("f"), "a/g": F("g")}])
    ex = why(v3, "/b/f")
    assert ex.verdict == "redirected_away", ex


def test_redirect_not_followed_and_invalid() -> None:
    v = DictView([{"new": D("new", redirect="old")}, {"old/f": F("f")}])
    assert why(v, "/new", redirect_dir="nofollow").verdict == "redirect_not_followed"
    v2 = DictView([{"new": D("new", redirect="a/b")}, {"a/b": D("b")}])
    assert why(v2, "/new").verdict == "invalid_redirect"


def test_metacopy_rules() -> None:
    v = DictView([{"m": F("m", size=10, metacopy=True)}, {"m": F("m", size=10)}])
    ex = why(v, "/m", metacopy="on")
    assert ex.visible and ex.layer == 0 and ex.data_layer == 1
    assert why(v, "/m", metacopy="off").verdict == "metacopy_not_enabled"
    v2 = DictView([{"m": F("m", metacopy=True)}, {}])
    assert why(v2, "/m", metacopy="on").verdict == "metacopy_data_missing"
    # a metacopy lower file whose absolute redirect points into a data-only layer
    v3 = DictView([{}, {"m": F("m", metacopy=True, redirect="/blobs/ab")}, {"blobs/ab": F("ab")}])
    ex = explain_path(stack_of(2, upper=True, datas=1, metacopy="on"), v3, "/m")
    assert ex.visible and ex.data_layer == 2, ex


def test_data_only_layers_never_visible_by_path() -> None:
    v = DictView([{}, {"a": F("a")}, {"secret": F("secret")}])
    ex = explain_path(stack_of(2, datas=1), v, "/secret")
    assert ex.verdict == "not_found" and "data-only layer 2" in ex.message


def test_symlinks_resolve_inside_the_merged_root() -> None:
    v = DictView([{"etc": L("etc", "/real/etc"), "up": L("up", "../../../real")}, {"real/etc/passwd": F("passwd")}])
    ex = why(v, "/etc/passwd")
    assert ex.visible and ex.resolved == "/real/etc/passwd"
    assert why(v, "/up/etc/passwd").visible  # '..' is clamped at the merged root
    loop = DictView([{"a": L("a", "b"), "b": L("b", "a")}, {}])
    assert why(loop, "/a/x").verdict == "symlink_loop"
    # the last component is not followed
    ex = why(v, "/etc")
    assert ex.visible and ex.kind == "symlink"


def test_covered_by_mount() -> None:
    v = DictView([{"proc/x": F("x")}, {}])
    assert why(v, "/proc/x", covered=("/proc",)).verdict == "covered_by_mount"
    assert why(v, "/proc", covered=("/proc",)).verdict == "covered_by_mount"


def test_not_found_suggestions() -> None:
    v = DictView([{"etc/Hosts": F("Hosts")}, {"etc/hostname": F("hostname")}])
    ex = why(v, "/etc/hosts")
    assert ex.verdict == "not_found" and "Hosts" in ex.suggestions
    assert "hostname" in why(v, "/etc/hostnam").suggestions


def test_unknown_when_xattrs_unreadable() -> None:
    v = DictView([{"d": D("d", xattrs_known=False)}, {"d/f": F("f")}])
    ex = why(v, "/d/f")
    assert ex.verdict == "unknown" and ex.assumed_verdict == "visible" and "CAP_SYS_ADMIN" in ex.message
    assert ex.visible is False  # never "visible" on a guess
    # an empty file that might be an xattr whiteout
    v2 = DictView([{"e": Entry("e", "file", stat.S_IFREG | 0o644, 0, xattrs_known=False)}, {"e": F("e")}])
    assert why(v2, "/e").verdict == "unknown"


def test_unreadable_layer_is_a_problem_not_a_crash() -> None:
    class Broken(DictView):
        def entry(self, layer, path):
            if layer == 1:
                raise ReadProblem(Problem("permission", "cannot read: permission denied", "/l1"))
            return super().entry(layer, path)

    v = Broken([{"a": F("a")}, {"b": F("b")}])
    ex = why(v, "/a")
    assert ex.visible and ex.problems and ex.problems[0].kind == "permission"


def test_deep_path_is_iterative() -> None:
    comps = [f"d{i}" for i in range(5000)]
    v = DictView([{}, {"/".join(comps) + "/leaf": F("leaf")}])
    ex = why(v, "/" + "/".join(comps) + "/leaf")
    assert ex.visible and ex.layer == 1
    # plain steps of the upper components are summarised, the last ones kept
    assert ex.steps[0]["event"] == "elided" and ex.steps[-1]["component"] == "leaf"
    assert len(ex.steps) < 300


def test_lookup_path_helper() -> None:
    v = DictView([{"a/b": F("b")}, {}])
    ctx = LookupContext(stack_of(2), v)
    f = lookup_path(ctx, ("a", "b"))
    assert f is not None and f.positive and f.loc is not None and f.loc.layer == 0


@pytest.mark.parametrize("verdict", VERDICTS)
def test_every_verdict_is_documented(verdict: str) -> None:
    import os

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert f"`{verdict}`" in readme


def test_unreadable_layer_above_the_answer_makes_it_unknown() -> None:
    """A layer above the decisive one could hold a whiteout or an opaque dir: never claim the
    answer then (found by running why-missing as nobody on root-owned 0700 layers)."""

    class Broken(DictView):
        def entry(self, layer, path):
            if layer == 0:
                raise ReadProblem(Problem("permission", "cannot read: permission denied", "/l0"))
            return super().entry(layer, path)

    v = Broken([{}, {"a": F("a")}])
    ex = why(v, "/a")
    assert ex.verdict == "unknown" and ex.visible is False and ex.assumed_verdict == "visible"
    ex = why(v, "/nope")
    assert ex.verdict == "unknown" and ex.assumed_verdict == "not_found"


def test_not_found_names_the_same_name_elsewhere() -> None:
    v = DictView([{"etc/app.conf": F("app.conf")}, {"opt/app/conf/app.conf": F("app.conf"), "usr/x": F("x")}])
    ex = why(v, "/usr/app.conf")
    assert ex.verdict == "not_found"
    assert ex.elsewhere == ("/etc/app.conf (layer 0)", "/opt/app/conf/app.conf (layer 1)")
    assert "the same name elsewhere: /etc/app.conf (layer 0)" in ex.message


def test_elsewhere_search_is_bounded() -> None:
    from ovlinspect.analysis import lookup

    files = {f"d{i}/f{j}": F(f"f{j}") for i in range(50) for j in range(600)}
    files["zz/needle"] = F("needle")
    v = DictView([{}, files])
    ex = why(v, "/needle")
    assert ex.verdict == "not_found"
    assert lookup.ELSEWHERE_SCAN_LIMIT < len(files)  # the needle lies beyond the budget: not found, no whole-tree walk
    assert ex.elsewhere == ()
