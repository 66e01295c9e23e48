"""Play episodes of a game with scripted seats (no model)."""

from __future__ import annotations

from rolekit.table import EpisodeSpec, ScriptedResponder, Scheduler


def play(kernel, game, seed: int, seats: dict[str, object], **scheduler_options):
    """One episode; ``seats`` maps role -> opponent name (registered) or fn(move, rng)."""
    responders, seat_map = {}, {}
    for role, who in seats.items():
        fn = kernel.opponents.get(who) if isinstance(who, str) else who
        name = f"seat:{role}"
        responders[name] = ScriptedResponder(name, fn)
        seat_map[role] = name
    [episode] = Scheduler(responders, kernel=kernel, **scheduler_options).run([EpisodeSpec(game, seed, seat_map)])
    return episode


def text_responder(texts):
    """A scripted 'player' that answers the i-th ask with texts[i] (then repeats the last)."""
    from rolekit.table import Answer

    class Texts:
        name = "texts"

        def __init__(self):
            self.i = 0

        def respond(self, asks):
            out = []
            for ask in asks:
                out.append([Answer(text=texts[min(self.i, len(texts) - 1)])])
                self.i += 1
            return out

    return Texts()
