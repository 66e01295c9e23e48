"""Chat prompts as token ids: the episode runtime's view of a tokenizer.

A thread of asks in one episode is extended token by token: a follow-up ask is the
previous ask's exact prompt and completion ids plus the ids of the new user message,
so the policy is scored on exactly the tokens it saw and produced, never on a
re-tokenisation of its own text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# End-of-turn tokens of common chat templates (ChatML, Llama 3, Phi 3, Gemma).
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

_PLACEHOLDER_USER = "rolekit-placeholder-user"
_PLACEHOLDER_ASSISTANT = "rolekit-placeholder-assistant"

Prompt = str | Sequence[Mapping[str, str]]


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


class ChatTokenizer:
    """A Hugging Face tokenizer seen through its chat template.

    ``encode`` turns a prompt into ids ending in the assistant generation prompt;
    ``continue_ids`` appends a follow-up user message to a conversation already held
    as ids; ``eos_ids`` are the tokens that end an assistant turn.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        eos |= {vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab}
        if not eos:
            raise ValueError("the tokenizer has no end-of-sequence or end-of-turn token")
        self.eos_ids: frozenset[int] = frozenset(eos)
        pad = tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else tokenizer.eos_token_id

    # ------------------------------------------------------------------ encoding

    def render(self, messages: Prompt, *, add_generation_prompt: bool = True) -> str:
        """The chat template applied to ``messages``, as text."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        return self.tokenizer.apply_chat_template(
            _messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _ids(self, text: str) -> tuple[int, ...]:
        # The rendered template already holds every special token it wants.
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, prompt: Prompt) -> tuple[int, ...]:
        """Ids of ``prompt`` (a user message, or a list of role/content messages),
        ending with the assistant generation prompt."""
        return self._ids(self.render(prompt, add_generation_prompt=True))

    def continuation_text(self, user_text: str) -> str:
        """Template text that follows an assistant answer when the user replies:
        end of the assistant turn + the user message + the generation prompt.

        Derived from the template by rendering a conversation with and without the
        follow-up and taking the difference, so it works for any template that renders
        a conversation as a prefix of its continuation (ChatML, Llama 3, ...).
        """
        user = {"role": "user", "content": _PLACEHOLDER_USER}
        answer = {"role": "assistant", "content": _PLACEHOLDER_ASSISTANT}
        before = self.render([user], add_generation_prompt=True) + _PLACEHOLDER_ASSISTANT
        after = self.render([user, answer, {"role": "user", "content": user_text}], add_generation_prompt=True)
        if not after.startswith(before):
            raise ValueError(
                "the chat template does not render a conversation as a prefix of its continuation; "
                "follow-up asks cannot extend token ids"
            )
        return after[len(before) :]

    def continue_ids(
        self, previous_context_ids: Sequence[int], previous_finish_reason: str, user_text: str
    ) -> tuple[int, ...]:
        """``previous_context_ids`` (a prompt and its completion) followed by a new user
        message and the generation prompt, without re-tokenising the previous ids.

        If the completion already ended with an end-of-turn token (finish reason
        ``"stop"``), that token is not repeated.
        """
        previous = tuple(int(i) for i in previous_context_ids)
        suffix = self.continuation_text(user_text)
        if previous_finish_reason == "stop" and previous and previous[-1] in self.eos_ids:
            ended_with = self.tokenizer.convert_ids_to_tokens(previous[-1])
            if suffix.startswith(ended_with):
                suffix = suffix[len(ended_with) :]
        ids = previous + self._ids(suffix)
        assert ids[: len(previous)] == previous
        return ids

    # ------------------------------------------------------------------ decoding

    def ids_containing(self, text: str) -> frozenset[int]:
        """Every token whose text contains ``text`` (e.g. "]": stop a terse answer at its end)."""
        cache = self.__dict__.setdefault("_containing", {})
        if text not in cache:
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            cache[text] = frozenset(i for i, tok in enumerate(vocab)
                                    if tok is not None and text in self.tokenizer.convert_tokens_to_string([tok]))
        return cache[text]

    def text_ids(self, text: str) -> tuple[int, ...]:
        """Plain text (no template, no special tokens) as token ids, e.g. an answer prefix."""
        return self._ids(text)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
