"""Learner tokens/s vs a bare forward+backward loop over the same samples, and padding.

The samples are real game prompts (Kuhn Poker, TicTacToe, Simple Negotiation, as the
chat template renders them for each seat, collected from scripted random play) with the
answer a trained policy gives (the bracketed move and the end-of-turn token), random
advantages. Three contenders train on them, interleaved round by round, each doing
one optimizer step over all samples:

* ``rolekit``: ``rolekit.learner.Learner.step`` (PPO-clip, per-role metrics, ...).
* ``bare_logits``: the loop one writes by hand -- length-sorted micro-batches of the
  same token budget, ``model(ids).logits`` -> log_softmax -> gather -> policy-gradient
  loss -> backward, then clip and AdamW.
* ``bare_gather``: the same, with the LM head applied only at completion positions.

rolekit also runs each distinct prompt of a micro-batch once (samples of the same
information set or the same ask share it; Kuhn prompts repeat, negotiation ones rarely);
the bare loops run every sample in full, as TRL and SPIRAL's learners do.

Tokens/s counts real (unpadded) prompt + completion tokens of the samples. The padding
fraction is that of rolekit's micro-batches (and, for comparison, of fixed-size batches
in arrival order).

    python bench/learner.py --quick
    python bench/learner.py                       # full: embedded model, LoRA r=16, 32 samples
    python bench/learner.py --device cuda --model <HF dir> --samples 256

value = rolekit tokens/s / the faster bare loop's tokens/s; goal 0.85.
"""

from __future__ import annotations

import random

import torch

from harness import default_model, emit, median, options, ratio, say, setup, side_by_side

GOAL = 0.85
GAMES = ("kuhn_poker", "tictactoe", "negotiation")


def game_samples(kernel, chat, count: int, seed: int, max_new_tokens: int):
    """``count`` Samples: prompts of scripted random play, answers = the move + end of turn."""
    from rolekit.rollout import make_game, scripted_responders, specs
    from rolekit.table import Scheduler
    from rolekit.types import Sample

    rng = random.Random(seed)
    eos = min(chat.eos_ids)
    out = []
    per_game = -(-count // len(GAMES))
    for name in GAMES:
        game = make_game(kernel, name)
        seats = {r: "scripted:random" for r in game.role_names()}
        responders = scripted_responders(kernel, game, seats)
        turns = []
        for episode in Scheduler(responders, kernel=kernel).run(specs(game, per_game, seed, seats)):
            turns += episode.turns
        prefix, stop = getattr(game, "answer_prefix", ""), getattr(game, "answer_stop", "")
        for turn in rng.sample(turns, min(per_game, len(turns))):
            # as the policy answers: the prefix ("[") ends the prompt, the answer ends at the stop
            # text ("]") or else at the end-of-turn token
            text = turn.text[len(prefix):] if prefix and turn.text.startswith(prefix) else turn.text
            answer = tuple(chat.tokenizer(text, add_special_tokens=False)["input_ids"][: max_new_tokens - 1])
            completion = answer if stop and text.endswith(stop) else answer + (eos,)
            prompt = chat.encode(turn.prompt) + tuple(chat.tokenizer(prefix, add_special_tokens=False)["input_ids"])
            out.append(Sample(game=name, role=turn.role, prompt_ids=prompt,
                              completion_ids=completion, logprobs=[-1.0] * len(completion),
                              advantage=rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 1.5)))
    rng.shuffle(out)
    return out[:count]


def bare_step(model, optimizer, params, samples, buckets, device, *, gather: bool, max_new_tokens: int) -> None:
    """One optimizer step of a plain policy-gradient loss, written the straightforward way."""
    from rolekit.backends.hf import split_model

    decoder, head = split_model(model)
    optimizer.zero_grad(set_to_none=True)
    for bucket in buckets:
        batch = [samples[i] for i in bucket]
        width = max(s.num_tokens for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        target_mask = torch.zeros((len(batch), width), dtype=torch.bool)  # positions whose next token is trained
        for b, s in enumerate(batch):
            seq = s.prompt_ids + s.completion_ids
            ids[b, : len(seq)] = torch.tensor(seq)
            attention[b, : len(seq)] = 1
            target_mask[b, len(s.prompt_ids) - 1 : len(seq) - 1] = True
        ids, attention, target_mask = ids.to(device), attention.to(device), target_mask.to(device)
        targets = ids[:, 1:]  # (B, L-1)
        adv = torch.tensor([s.advantage for s in batch], device=device)[:, None].expand(-1, width - 1)
        if gather:
            hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, L, H)
            m = target_mask[:, :-1]
            logits = head(hidden[:, :-1][m]).float()  # (N, V): only completion positions
            logp = torch.log_softmax(logits, -1).gather(1, targets[m][:, None]).squeeze(1)
            loss = -(adv[m] * logp).sum() / max_new_tokens
        else:
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()  # (B, L-1, V)
            logp = torch.log_softmax(logits, -1).gather(2, targets[..., None]).squeeze(2)
            m = target_mask[:, :-1]
            loss = -(adv * logp * m).sum() / max_new_tokens
        loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()


def length_buckets(samples, max_tokens: int) -> list[list[int]]:
    """Length-sorted buckets of at most ``max_tokens`` padded tokens, every sample in full."""
    buckets, current, longest = [], [], 0
    for i in sorted(range(len(samples)), key=lambda i: samples[i].num_tokens):
        n = samples[i].num_tokens
        if current and max(longest, n) * (len(current) + 1) > max_tokens:
            buckets.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    return buckets + [current] if current else buckets


def padding(samples, buckets) -> float:
    real = sum(s.num_tokens for s in samples)
    padded = sum(len(b) * max(samples[i].num_tokens for i in b) for b in buckets)
    return 1.0 - real / padded


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--full-finetune", action="store_true", help="train all weights instead of LoRA r=16")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    info = setup(args)
    model_name = default_model(args)
    count = args.samples or (24 if args.quick else 32)
    repeats = args.repeats or 3

    from rolekit.chat import ChatTokenizer
    from rolekit.config import AlgorithmConfig, LoraConfig
    from rolekit.learner import Learner
    from rolekit.models import load_model
    from rolekit.plugins import Kernel

    loaded = load_model(model_name, device=args.device)
    model = loaded.model
    if args.full_finetune:
        model.requires_grad_(True)
    else:
        import peft

        lora = LoraConfig()
        model = peft.get_peft_model(model, peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                           target_modules=list(lora.target_modules),
                                                           task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    chat = ChatTokenizer(loaded.tokenizer)
    samples = game_samples(Kernel(), chat, count, args.seed, args.max_new_tokens)
    tokens = sum(s.num_tokens for s in samples)
    cfg = AlgorithmConfig(lr=1e-5, micro_batch_tokens=args.micro_batch_tokens)
    learner = Learner(model, params, cfg, device=loaded.device)
    bare_optimizer = torch.optim.AdamW(params, lr=1e-5)
    buckets = length_buckets(samples, args.micro_batch_tokens)  # the bare loops'
    per_bucket = max(len(b) for b in buckets)
    arrival = [list(range(i, min(i + per_bucket, len(samples)))) for i in range(0, len(samples), per_bucket)]
    metrics: dict = {}

    def rolekit_step() -> float:
        metrics.update(learner.step(samples, args.max_new_tokens))
        return tokens

    def bare(gather: bool):
        def run() -> float:
            model.train()
            bare_step(model, bare_optimizer, params, samples, buckets, loaded.device, gather=gather,
                      max_new_tokens=args.max_new_tokens)
            model.eval()
            return tokens
        return run

    contenders = {"rolekit": rolekit_step, "bare_gather": bare(True), "bare_logits": bare(False)}
    distinct = len({s.prompt_ids for s in samples})
    say(f"{len(samples)} samples ({distinct} distinct prompts), {tokens} tokens, model {model_name}, "
        f"{'full fine-tuning' if args.full_finetune else 'LoRA r=16'}")
    rolekit_step()  # warm-up
    rates = side_by_side(contenders, repeats, device=args.device, log=say)
    fastest = max(("bare_gather", "bare_logits"), key=lambda k: median(rates[k]))
    value = ratio(rates["rolekit"], rates[fastest])
    emit("learner", value, GOAL, f"rolekit learner tok/s / bare loop tok/s ({fastest})",
         model=model_name, lora=not args.full_finetune, samples=len(samples), tokens=tokens,
         distinct_prompts=distinct, micro_batches=metrics["micro_batches"], bare_micro_batches=len(buckets),
         micro_batch_tokens=args.micro_batch_tokens, computed_tokens=metrics["computed_tokens"],
         padding_fraction=metrics["padding_fraction"], padding_fraction_bare=padding(samples, buckets),
         padding_fraction_unsorted=padding(samples, arrival),
         tokens_per_s={k: median(v) for k, v in rates.items()},
         vs_bare_gather=ratio(rates["rolekit"], rates["bare_gather"]),
         vs_bare_logits=ratio(rates["rolekit"], rates["bare_logits"]),
         repeats=repeats, quick=args.quick, machine=info)


if __name__ == "__main__":
    main()
