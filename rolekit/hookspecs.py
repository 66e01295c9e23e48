"""The whole extension surface of rolekit, in one file.

A plugin is a module (or object) with functions marked ``@rolekit.hookimpl`` whose names
match the specs below. Installed plugins are distributions with an entry point in group
``rolekit``; rolekit's own built-ins are registered through the same path and can be
blocked by name like any other plugin.

Hooks are grouped by phase:

* **registration** (called once, when the plugin manager loads): each hook receives a
  ``registry`` and calls ``registry.add(...)``. Names must be unique across plugins: a
  duplicate is refused with a message naming both plugins.
* **observation** (called during rollouts and training): episode and step observers.

An implementation may accept fewer arguments than its spec declares, so arguments are
only ever added to these specs, never removed or renamed. A plugin with a hook no spec
declares (a misspelt name) or an argument its spec does not pass is reported by name,
with the closest hook name, and skipped, like a plugin that fails to import.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("rolekit")
hookimpl = pluggy.HookimplMarker("rolekit")


# --- registration -------------------------------------------------------------------


@hookspec
def rolekit_register_games(registry):
    """Register role graphs (``Game`` subclasses).

    Called once at load, after ``rolekit_register_roles``. ``registry.add(GameClass)``
    uses ``GameClass.name``; the class must subclass ``Game``, have a non-empty ``name``,
    define ``roles`` (``Role`` values or role names, each once) and
    ``async def play(self, table)`` (or subclass ``TurnBasedGame``). A class that does
    not is reported by plugin and game name and skipped; the plugin's other games are
    registered. Role names are resolved when the game is registered: a registered role
    of that name, else ``Role(name)``. Options given in configs or ``--option k=v`` are
    passed to the class's constructor as keyword arguments. Return value ignored.
    """


@hookspec
def rolekit_register_roles(registry):
    """Register reusable roles (a judge, a verifier seat, ...) as ``Role`` values.

    Called once at load, before ``rolekit_register_games``:
    ``registry.add(Role("judge", "scores an answer 0-10"))``. Games may refer to
    registered roles by name (``roles = ("questioner", "judge")``); registration turns
    each name into the registered ``Role``. Return value ignored.
    """


@hookspec
def rolekit_register_verifiers(registry):
    """Register verifiers: ``registry.add(name, fn)`` with ``fn(*args, **kwargs) -> Verdict``.

    Called once at load. Games call them through ``table.verify(name, ...)``. A verifier
    must not raise on malformed answers: it returns ``Verdict(score=0, ok=False)``.
    Every verifier ``fn(response, prompt=...)`` is also a rule judge for
    ``await table.judge(name, items)``. A model judge is registered as a factory:
    ``registry.add("judge", factory, judge=True)`` with ``factory(argument, context) ->
    judge`` (``judge.respond(requests) -> list[list[Verdict]]``), asked as
    ``"judge:ARGUMENT"``; see ``rolekit.verifiers.judges``. Return value ignored.
    """


@hookspec
def rolekit_register_rewards(registry):
    """Register reward shapers: ``registry.add(name, fn)``.

    Called once at load. A shaper is a plain function accepting keyword arguments (and
    ``**kwargs`` for forward compatibility) and returning a float or a mapping
    role -> float, e.g. ``zero_sum``, ``invalid_move``, ``gaussian_difficulty``.
    Return value ignored.
    """


@hookspec
def rolekit_register_advantages(registry):
    """Register advantage estimators: ``registry.add(name, factory)``.

    Called once at load. ``factory(**options)`` returns an object with
    ``samples(items) -> list[Sample]`` and ``state_dict()`` / ``load_state_dict()``
    (for checkpoints). ``items`` is every ``(episode, role)`` pair routed to the
    estimator in one rollout round -- the whole step's finished episodes, in the order
    they finished, for the roles the policy played -- so an estimator can normalise
    across episodes. A turn's reward is ``episode.turn_reward(turn)`` (its own reward
    plus its role's terminal return); skip turns in ``episode.dropped``
    (``rolekit.advantages.policy_turns`` does). One instance serves every (game, role)
    routed to it: keep statistics per ``f"{game}/{role}"``. Configs choose an estimator
    per role (``advantage = {proposer = "role_norm", solver = "grpo"}``) with options
    per name (``advantage_options = {rae = {decay = 0.9}}``); a game may declare the
    ones it was designed for (``Game.estimators``). Built-ins: ``rae``, ``grpo``,
    ``role_norm``, ``raw``. Return value ignored.
    """


@hookspec
def rolekit_register_opponents(registry):
    """Register scripted policies: ``registry.add(name, fn, games=(...))``.

    Called once at load. ``fn(move, rng) -> str`` receives a ``MoveInfo`` (game, state,
    role, legal actions) and a ``random.Random`` and returns one legal action.
    ``games`` limits the opponent to those games (``None``: any turn-based game).
    Seat maps refer to them as ``scripted:NAME``. Return value ignored.
    """


# --- observation --------------------------------------------------------------------


@hookspec
def rolekit_episode_end(episode):
    """Called once for every finished episode, quarantined ones included (``episode.error``).

    Observers log, count or filter: return ``False`` to drop the episode from training
    (any ``False`` drops it; ``None`` or ``True`` keeps it). Cross-cutting behaviour
    (timing, logging) is best written as a ``hookimpl(wrapper=True)``.
    """


@hookspec
def rolekit_step_end(step, metrics):
    """Called after every training step, with the step number and its metrics dict.

    Implementations may add keys to ``metrics`` (it is written to ``metrics.jsonl``
    after all observers ran). Return value ignored.
    """
