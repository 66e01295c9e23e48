"""Plugin manager: entry-point loading, built-ins, registries, and typed hook access."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
from typing import Any, Callable, Iterable, Iterator

import attrs
import pluggy

from rolekit import hookspecs
from rolekit.game import resolve_roles

ENTRY_POINT_GROUP = "rolekit"
BUILTIN_PLUGINS = {"builtins": "rolekit.builtins"}
DISABLE_ENV = "ROLEKIT_DISABLE_PLUGINS"  # comma-separated plugin names
HOOK_NAMES = sorted(n for n, f in vars(hookspecs).items() if hasattr(f, "rolekit_spec"))


class PluginError(Exception):
    """A plugin could not be loaded, or two plugins registered the same name."""


class UnknownNameError(KeyError):
    """A name that no plugin registered; the message lists the closest valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen
class Entry:
    """One registered thing and the plugin that registered it."""

    name: str
    obj: Any
    plugin: str
    meta: dict[str, Any] = attrs.Factory(dict)


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like a mistyped ``name`` (for "did you mean ...?"), or None."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return close[0] if close else None


def _did_you_mean(name: str, valid: Iterable[str]) -> str:
    close = closest(name, valid)
    return f" (did you mean {close!r}?)" if close else ""


class Registry:
    """Name -> Entry for one kind of thing; refuses duplicates, naming both plugins.

    ``check(name, obj)`` (optional) validates a thing before it is added and returns what
    to store; a ValueError it raises skips that thing: ``rejected`` keeps
    ``(plugin, message)`` for each, and the rest of the plugin's registrations go on.
    """

    def __init__(self, kind: str, check: Callable[[str, Any], Any] | None = None):
        self.kind = kind
        self.check = check
        self.rejected: list[tuple[str, str]] = []
        self._entries: dict[str, Entry] = {}
        self.current_plugin = "<direct>"

    def add(self, name_or_obj, obj=None, **meta) -> None:
        """``add(obj)`` (named by ``obj.name``) or ``add(name, obj)``; ``meta`` is kept on the entry."""
        if obj is None:
            obj = name_or_obj
            name = getattr(obj, "name", None)
            if not isinstance(name, str):
                raise PluginError(
                    f"plugin {self.current_plugin!r}: registering a {self.kind[:-1]} needs a name: "
                    f"registry.add(name, obj) or an object with a .name"
                )
        else:
            name = name_or_obj
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.kind[:-1]} {name!r} is registered by both plugin {other!r} and plugin "
                f"{self.current_plugin!r}; block one of them ({DISABLE_ENV}={other} or --disable)"
            )
        if self.check is not None:
            try:
                obj = self.check(name, obj)
            except ValueError as exc:
                label = repr(name) if name else f"class {getattr(obj, '__qualname__', repr(obj))}"
                self.rejected.append((self.current_plugin, f"{self.kind[:-1]} {label} {exc}"))
                return
        self._entries[name] = Entry(name, obj, self.current_plugin, dict(meta))

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            valid = ", ".join(sorted(self._entries)) or "none installed"
            raise UnknownNameError(f"unknown {self.kind[:-1]} {name!r}{hint} (available: {valid})") from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)


REGISTRY_HOOKS = {
    "games": "rolekit_register_games",
    "roles": "rolekit_register_roles",
    "verifiers": "rolekit_register_verifiers",
    "rewards": "rolekit_register_rewards",
    "advantages": "rolekit_register_advantages",
    "opponents": "rolekit_register_opponents",
}


@attrs.frozen
class PluginInfo:
    name: str
    version: str | None
    module: str
    error: str | None = None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- plugin-API compatibility ------------------------------------------------------------
#
# While rolekit is 0.x its minor version is the plugin API: hooks and the Table, Game and
# registry APIs plugins use may change between 0.1 and 0.2, never within 0.1.z (from 1.0,
# the major version). A plugin declares the kernels it is built for as its dependency on
# rolekit (``dependencies = ["rolekit>=0.1,<0.2"]``, what ``rolekit new-plugin`` writes);
# pip enforces that at install time, and the kernel again at load time, which catches
# ``--no-deps`` installs and a rolekit upgraded under installed plugins.


def kernel_version() -> str:
    """This rolekit's version (the installed distribution's, else ``rolekit.__version__``)."""
    import rolekit

    return _version("rolekit") or rolekit.__version__


def kernel_range(version: str | None = None) -> str:
    """The requirement specifier of the kernels compatible with ``version`` (this one's by
    default): ``>=0.1,<0.2`` for 0.1.z, ``>=1.2,<2`` for 1.2.z."""
    from packaging.version import Version

    v = Version(version or kernel_version())
    upper = f"{v.major}.{v.minor + 1}" if v.major == 0 else f"{v.major + 1}"
    return f">={v.major}.{v.minor},<{upper}"


def incompatible(dist: importlib.metadata.Distribution | None, version: str | None = None) -> str | None:
    """Why the plugin distribution ``dist`` cannot run on this kernel (its ``rolekit``
    requirement excludes ``version``, this kernel's by default), or None. A plugin that
    names no range, or a malformed one, is loaded (the range is for the kernel to check, not
    a gate on old plugins)."""
    from packaging.requirements import InvalidRequirement, Requirement

    if dist is None:
        return None
    version = version or kernel_version()
    for line in dist.requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.lower() != "rolekit" or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return (f"is built for rolekit{req.specifier} but this is rolekit {version} (install a "
                    f"{dist.metadata['Name']} release built for rolekit{kernel_range(version)})")
    return None


class Kernel:
    """The loaded plugins: one typed method or registry per hook (the engine never calls pluggy)."""

    def __init__(
        self,
        plugins: Iterable[Any] = (),
        *,
        load_entrypoints: bool = True,
        builtins: bool = True,
        disable: Iterable[str] = (),
    ):
        self.pm = pluggy.PluginManager("rolekit")
        self.pm.add_hookspecs(hookspecs)
        blocked = set(disable) | {n for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        for name in blocked:
            self.pm.set_blocked(name.strip())
        self.info: dict[str, PluginInfo] = {}
        if builtins:
            for name, module in BUILTIN_PLUGINS.items():
                self._register(importlib.import_module(module), name, version=_version("rolekit"))
        if load_entrypoints:
            self._load_entrypoints()
        for plugin in plugins:
            self._register(plugin, getattr(plugin, "__name__", None) or type(plugin).__name__, None)
        self.pm.check_pending()  # never fails: a plugin with an unknown hook was skipped
        self.roles = self._fill("roles")
        self.games = self._fill("games", check=self._check_game)  # games may name registered roles
        self.verifiers = self._fill("verifiers")
        self.rewards = self._fill("rewards")
        self.advantages = self._fill("advantages")
        self.opponents = self._fill("opponents")

    # --- loading --------------------------------------------------------------------

    def _register(self, plugin, name: str, version: str | None) -> None:
        if self.pm.is_blocked(name):
            return
        info = PluginInfo(name, version, getattr(plugin, "__name__", repr(plugin)))
        problem = self._hook_problem(plugin)
        if problem is None:
            try:
                self.pm.register(plugin, name=name)
            except ValueError as exc:
                raise PluginError(f"plugin {name!r} could not be registered: {exc}") from None
            except pluggy.PluginValidationError as exc:  # what _hook_problem does not check
                problem = " ".join(str(exc).split())
        if problem is not None:  # reported by name and skipped, like a plugin that fails to import
            info = attrs.evolve(info, error=problem)
            print(f"rolekit: plugin {name!r} {problem} and was skipped", file=sys.stderr)
        self.info[name] = info

    def _hook_problem(self, plugin) -> str | None:
        """What is wrong with a plugin's hook implementations, or None: the first hook no spec
        declares, or the first that takes an argument its spec does not pass."""
        for attr in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            hook = opts.get("specname") or attr
            caller = getattr(self.pm.hook, hook, None)
            spec = caller.spec if caller is not None else None
            if spec is None:
                if not opts.get("optionalhook"):
                    return f"has an unknown hook {hook!r}{_did_you_mean(hook, HOOK_NAMES)}"
                continue
            impl = pluggy.HookImpl(plugin, "", getattr(plugin, attr), opts)
            extra = [a for a in impl.argnames if a not in spec.argnames and a not in spec.kwargnames]
            if extra:
                return (f"has a hook {hook!r} with an argument the hook does not pass: "
                        f"{', '.join(map(repr, extra))} (it passes: {', '.join(spec.argnames)})")
        return None

    def _load_entrypoints(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            version = ep.dist.version if ep.dist else None
            problem = incompatible(ep.dist)
            if problem is not None:  # built for another kernel: reported by name, never imported
                self.info[ep.name] = PluginInfo(ep.name, version, ep.value, error=problem)
                print(f"rolekit: plugin {ep.name!r} ({ep.value}) {problem}; it was not loaded", file=sys.stderr)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin is reported by name and skipped
                message = f"{type(exc).__name__}: {exc}"
                self.info[ep.name] = PluginInfo(ep.name, version, ep.value, error=message)
                print(f"rolekit: plugin {ep.name!r} ({ep.value}) failed to load and was skipped: {message}",
                      file=sys.stderr)
                continue
            self._register(plugin, ep.name, version)

    def _fill(self, kind: str, check: Callable[[str, Any], Any] | None = None) -> Registry:
        registry = Registry(kind, check)
        caller = getattr(self.pm.hook, REGISTRY_HOOKS[kind])
        for impl in caller.get_hookimpls():  # registration order
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(**{arg: registry for arg in impl.argnames})
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {REGISTRY_HOOKS[kind]}: {type(exc).__name__}: {exc}"
                ) from exc
        for plugin, message in registry.rejected:  # reported by name and skipped
            print(f"rolekit: plugin {plugin!r}: {message} and was skipped", file=sys.stderr)
            self._add_error(plugin, message)
        return registry

    def _check_game(self, name: str, cls) -> Any:
        """A game class fit to register, its ``roles`` resolved to ``Role`` values (names
        of registered roles become those roles); ValueError saying what is wrong."""
        roles = resolve_roles(cls, {e.name: e.obj for e in self.roles})
        if name != cls.name:
            raise ValueError(f"is registered as {name!r} but its name is {cls.name!r}")
        cls.roles = roles
        return cls

    def _add_error(self, plugin: str, message: str) -> None:
        info = self.info.get(plugin) or PluginInfo(plugin, None, plugin)
        error = message if info.error is None else f"{info.error}; {message}"
        self.info[plugin] = attrs.evolve(info, error=error)

    # --- typed hook calls -----------------------------------------------------------

    def episode_end(self, episode) -> bool:
        """Run the episode observers; False when any of them drops the episode."""
        return all(answer is not False for answer in self.pm.hook.rolekit_episode_end(episode=episode))

    def step_end(self, step: int, metrics: dict) -> None:
        self.pm.hook.rolekit_step_end(step=step, metrics=metrics)

    # --- reporting ------------------------------------------------------------------

    def describe(self) -> list[dict]:
        """What each plugin registers, for ``rolekit plugins``."""
        out = []
        for name, info in sorted(self.info.items()):
            row = {"name": name, "version": info.version, "module": info.module}
            if info.error:
                row["error"] = info.error
            for kind in REGISTRY_HOOKS:
                registry: Registry = getattr(self, kind, None) or Registry(kind)
                names = [e.name for e in registry if e.plugin == name]
                if names:
                    row[kind] = names
            out.append(row)
        return out
