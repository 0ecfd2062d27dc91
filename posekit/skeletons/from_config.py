"""A skeleton as a config stores it: by content (names, flip pairs, limbs, sigmas), so a
checkpoint, which carries its config, needs neither the recipe nor the YAML it came from."""
from __future__ import annotations

from posekit.skeletons import Skeleton, get_skeleton, list_skeletons, load_skeleton_yaml, register_skeleton

__all__ = ["skeleton_from_config", "skeleton_to_config"]


def skeleton_to_config(value, *, key: str = "data.skeleton", error: type[Exception] = ValueError) -> dict:
    """A skeleton name, YAML path, Skeleton or content dict -> its content dict (what the config
    stores). A bad value raises `error` naming the config `key` (families pass ConfigError)."""
    if isinstance(value, Skeleton):
        sk = value
    elif isinstance(value, dict):
        sk = _skeleton_from_dict(value, key, error)
    elif isinstance(value, str):
        try:
            if value.endswith((".yaml", ".yml")):
                sk = load_skeleton_yaml(value)  # not registered: editing the YAML and re-running works
            else:
                sk = get_skeleton(value)
        except FileNotFoundError as e:
            raise error(f"{key}: {e}") from None
        except (KeyError, ValueError) as e:
            msg = e.args[0] if e.args else str(e)
            raise error(f"{key}: {msg}") from None
    else:
        raise error(f"{key} must be a skeleton name ({', '.join(list_skeletons())}), a .yaml path "
                    f"or a mapping, got {value!r}")
    d = sk.to_dict()
    if sk.limb_colors is not None:
        d["limb_colors"] = ["#%02x%02x%02x" % tuple(c) for c in sk.limb_colors]
    return d


def _skeleton_from_dict(d: dict, key: str, error: type[Exception]) -> Skeleton:
    try:
        return Skeleton.from_dict(d, source=key)
    except (ValueError, TypeError) as e:
        raise error(str(e)) from None


def skeleton_from_config(d: dict, *, key: str = "data.skeleton", error: type[Exception] = ValueError) -> Skeleton:
    """The stored content as a Skeleton: the registered one when it is the same, else the content
    itself (registered under its name when that name is free, so Results JSON can name it)."""
    sk = _skeleton_from_dict(d, key, error)
    if sk.name in list_skeletons():
        registered = get_skeleton(sk.name)
        return registered if registered == sk else sk
    return register_skeleton(sk)
