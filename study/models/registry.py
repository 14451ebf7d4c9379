"""Which zoo names exist and which family each belongs to. Family files register themselves here."""

from typing import Literal

Family = Literal["cnn", "vit", "windowed_vit", "vim", "vmamba", "gated_cnn"]
FAMILIES: tuple[str, ...] = ("cnn", "vit", "windowed_vit", "vim", "vmamba", "gated_cnn")

_FAMILY_OF: dict[str, str] = {}
_LISTED: list[str] = []  # the zoo users see; small test_* variants are registered but not listed


def register_family(names: list[str], family: Family, listed: bool = True) -> None:
    """Record `names` (already registered with timm) as members of `family`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    for name in names:
        _FAMILY_OF[name] = family
        if listed and name not in _LISTED:
            _LISTED.append(name)


def available() -> list[str]:
    """The zoo: every model name `create` accepts, test variants excepted."""
    return list(_LISTED)


def family_of(name: str) -> Family:
    """ "cnn", "vit", "windowed_vit", "vim", "vmamba" or "gated_cnn"; ValueError for an unknown
    name."""
    if name not in _FAMILY_OF:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return _FAMILY_OF[name]  # type: ignore[return-value]
