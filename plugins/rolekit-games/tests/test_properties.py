"""Property tests (hypothesis) for every game: arbitrary text never crashes a game, an
illegal answer is an invalid move, returns are zero-sum (apart from the documented
invalid-move outcome: offender -1.5, opponent +0.5), and a seed replays its episode."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from games_helpers import play, text_responder
from rolekit.table import EpisodeSpec, ScriptedResponder, Scheduler
from rolekit_games import KuhnPoker, Negotiation, TicTacToe

GAMES = {
    "kuhn_poker": lambda: KuhnPoker(),
    "kuhn_poker_5_rounds": lambda: KuhnPoker(rounds=5, mode="reasoning"),
    "tictactoe": lambda: TicTacToe(),
    "negotiation": lambda: Negotiation(turn_limit=6),
}
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Answers: arbitrary text, and text built around moves that may or may not be legal.
MOVES = ["check", "bet", "fold", "call", "Check", " CALL ", "4", "0", "9", "-1", "Accept", "deny",
         "Offer: 1 Wheat -> 1 Brick", "Offer: 30 Ore -> 1 Wood", "offer: 2 sheep, 1 wood -> 3 ore",
         "Offer: 1 Gold -> 1 Ore"]
answers = st.one_of(
    st.text(max_size=80),
    st.builds(lambda pre, m, post, wrap: pre + (f"[{m}]" if wrap else f"\\boxed{{{m}}}") + post,
              st.text(max_size=20), st.sampled_from(MOVES), st.text(max_size=20), st.booleans()),
)


def reachable(game, seed, steps):
    """A state reached from the seed's deal by ``steps`` random legal moves (or the end)."""
    rng = random.Random(seed)
    state = game.reset(random.Random(seed))
    for _ in range(steps):
        if game.returns(state) is not None:
            break
        state = game.apply(state, rng.choice(list(game.legal_actions(state))))
    return state


@pytest.mark.parametrize("name", GAMES)
@PROPERTY
@given(seed=st.integers(0, 10**6), steps=st.integers(0, 12), text=answers)
def test_arbitrary_text_never_crashes_and_only_legal_moves_parse(name, seed, steps, text):
    game = GAMES[name]()
    state = reachable(game, seed, steps)
    action = game.parse_action(state, text)
    if action is None:
        return
    assert game.returns(state) is None
    if not isinstance(game, Negotiation):
        assert action in game.legal_actions(state)
    game.apply(state, action)  # a parsed action is always applicable


@pytest.mark.parametrize("name", GAMES)
@PROPERTY
@given(seed=st.integers(0, 10**6), texts=st.lists(answers, min_size=1, max_size=8), seat=st.sampled_from([0, 1]))
def test_illegal_answers_are_invalid_moves_and_returns_are_zero_sum(kernel, name, seed, texts, seat):
    game = GAMES[name]()
    role, other = f"player_{seat}", f"player_{1 - seat}"
    responders = {"texts": text_responder(texts),
                  "random": ScriptedResponder("random", kernel.opponents.get("random"))}
    [episode] = Scheduler(responders, kernel=kernel).run([EpisodeSpec(game, seed, {role: "texts", other: "random"})])
    assert episode.ok, episode.error
    mine = episode.turns_of(role)
    first_bad = next((t for t in mine if t.action is None), None)
    if first_bad is not None:
        assert mine[-1] is first_bad  # the invalid move ended the game
        assert episode.info["invalid"] == role and episode.info["winner"] == other
        assert episode.returns == {role: -1.5, other: 0.5}
    else:
        assert "invalid" not in episode.info
        assert sum(episode.returns.values()) == 0


@pytest.mark.parametrize("name", GAMES)
@PROPERTY
@given(seed=st.integers(0, 10**6))
def test_same_seed_replays_the_same_episode(kernel, name, seed):
    game = GAMES[name]()
    seats = {"player_0": "random", "player_1": "heuristic" if isinstance(game, Negotiation) else "random"}
    a, b = play(kernel, game, seed, seats), play(kernel, game, seed, seats)
    assert a.ok and b.ok
    replay = lambda ep: [(t.role, t.prompt, t.text, t.action) for t in ep.turns]  # noqa: E731
    assert replay(a) == replay(b)
    assert a.returns == b.returns and a.info == b.info
    assert sum(a.returns.values()) == 0
    assert all(t.action is not None for t in a.turns)  # scripted players never move illegally
