"""resolve_user: names and groups come from the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernetes.runtime.images import Image, ImageStore, UnknownUser, resolve_user
from tools.imagebuild import ImageSpec, Layer, LayerBuilder, OciLayout, busybox_image


def imported(tmp_path: Path, spec: ImageSpec) -> Image:
    layout = OciLayout(tmp_path / "layout")
    layout.add(spec, "t")
    [image] = ImageStore(tmp_path / "store").import_archive(tmp_path / "layout")
    return image


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return imported(tmp_path_factory.mktemp("users"), busybox_image())


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (0, 0, (10,))),
        ("root", (0, 0, (10,))),
        ("0", (0, 0, (10,))),
        ("app", (1000, 1000, (29, 2000))),
        ("1000", (1000, 1000, (29, 2000))),
        ("1000:2000", (1000, 2000, (29,))),
        ("app:extra", (1000, 2000, (29,))),
        ("app:0", (1000, 0, (29, 2000))),
        ("nobody", (65534, 65534, (29,))),
        ("4242", (4242, 0, ())),
        ("4242:4343", (4242, 4343, ())),
        ("4242:audio", (4242, 29, ())),
    ],
)
def test_resolve_user(busybox: Image, user: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert resolve_user(busybox, user) == expected


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("ghost", "user 'ghost' not found in the image's /etc/passwd"),
        ("app:ghosts", "group 'ghosts' not found in the image's /etc/group"),
        ("app:", "invalid user 'app:': empty group after ':'"),
        ("99999999999", "invalid user '99999999999': uid out of range"),
    ],
)
def test_unknown_names_are_clear(busybox: Image, user: str, message: str) -> None:
    with pytest.raises(UnknownUser) as info:
        resolve_user(busybox, user)
    assert str(info.value) == message


def test_image_user_is_the_default(tmp_path: Path) -> None:
    image = imported(tmp_path, busybox_image(user="app:extra"))
    assert resolve_user(image, "") == (1000, 2000, (29,))
    assert resolve_user(image, "nobody") == (65534, 65534, (29,))


def test_passwd_symlink_is_not_followed(tmp_path: Path) -> None:
    """An image whose /etc/passwd points at the host's must not have the host's users."""
    layer = LayerBuilder().dir("etc").symlink("etc/passwd", "/etc/passwd").tar()
    image = imported(tmp_path, ImageSpec([Layer(layer)]))
    assert image.users.users == ()
    assert resolve_user(image, "0:0") == (0, 0, ())
    with pytest.raises(UnknownUser):
        resolve_user(image, "root")
