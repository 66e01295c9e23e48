"""Generation through the lean LoRA view against peft's own modules, side by side.

The HF backend generates and scores a LoRA model through ``rolekit.backends.lora.LeanLoRA``
(the same weights, peft's per-call bookkeeping gone, the same values bit for bit). This
times one ``vs_trl`` step's generation -- 2 Kuhn Poker prompts opened with "[", 8 seeded
answers each, 32 new tokens at temperature 1, LoRA r = 16 on every projection with random
(non-zero) adapter weights -- through the view (``lean_lora = True``) and through peft
(``lean_lora = False``) on one model, interleaved, and checks that both give the same
tokens and logprobs. ``--bf16``: a bf16 base under bf16 autocast (``model.bf16 = true``).

    python bench/lean_lora.py --quick            # tiny-random, fp32
    python bench/lean_lora.py [--bf16]           # the embedded default

value = tokens/s through the view / tokens/s through peft (median of the per-round
ratios); goal: above 1.
"""

from __future__ import annotations

from harness import default_model, emit, median, options, ratio, say, setup, side_by_side

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="a bf16 base under bf16 autocast")
    args = parser.parse_args()
    info = setup(args)
    import peft
    import torch

    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model
    from rolekit.types import GenerationRequest
    from vs_trl import GENERATIONS, MAX_TOKENS, PREFIX, PROMPTS_PER_STEP, decision_prompts

    model_name = default_model(args)
    loaded = load_model(model_name, device=args.device, dtype=torch.bfloat16 if args.bf16 else None)
    torch.manual_seed(args.seed)
    model = peft.get_peft_model(loaded.model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS,
                                                              init_lora_weights=False)).eval()
    chat = ChatTokenizer(loaded.tokenizer)
    prompts = [chat.encode(m) + chat.text_ids(PREFIX) for _, m, _ in decision_prompts()[:PROMPTS_PER_STEP]]
    requests = [GenerationRequest(p, max_new_tokens=MAX_TOKENS, temperature=1.0, seed=args.seed + i)
                for i, p in enumerate(prompts * GENERATIONS)]
    backends = {name: HFBackend(model, chat, autocast_bf16=args.bf16 or None, lean_lora=name == "lean")
                for name in ("lean", "peft")}
    out = {}

    def run(name):
        out[name] = backends[name].generate(requests)
        return sum(len(g.completion_ids) for g in out[name])

    repeats = args.repeats or (2 if args.quick else 4)
    rates = side_by_side({name: (lambda name=name: run(name)) for name in backends}, repeats + 1,
                         device=args.device, log=say)
    rates = {k: v[1:] for k, v in rates.items()}  # the first round warms both up
    same = [g.completion_ids for g in out["lean"]] == [g.completion_ids for g in out["peft"]] and \
        [g.logprobs for g in out["lean"]] == [g.logprobs for g in out["peft"]]
    emit("lean_lora" + ("_bf16" if args.bf16 else ""), ratio(rates["lean"], rates["peft"]), 1.0,
         "tokens/s through the lean view / tokens/s through peft", model=model_name, bf16=args.bf16,
         lean_tokens_per_s=median(rates["lean"]), peft_tokens_per_s=median(rates["peft"]),
         same_tokens_and_logprobs=same, rounds=repeats, quick=args.quick, machine=info)


if __name__ == "__main__":
    main()
