"""Length-sorted generation batches, bf16 autocast through accelerate, the task-runner switch."""

from __future__ import annotations

import torch

from components.policy_trainer import train_policy
from components.seq2seq_policy import length_batches
from flows.distributed import Hardware, make_accelerator
from tests import dp_worker
from tests.conftest import policy_config


def test_length_batches_cover_every_position_once_longest_first():
    lengths = torch.tensor([5, 30, 7, 30, 1, 12, 9])
    batches = length_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(7))
    assert [int(lengths[i]) for i in flat] == sorted(lengths.tolist(), reverse=True)
    assert flat[:2] == [1, 3]  # ties keep corpus order


def test_bf16_autocast_trains_and_leaves_a_plain_fp32_model():
    tokenizer, model, sources, labels, mask, rewards = dp_worker.policy_problem()
    seen = []
    hook = model.decoder.register_forward_hook(lambda module, args, out: seen.append(out.logits.dtype))
    accelerator = make_accelerator(Hardware(device="cpu", bf16=True))
    assert accelerator.mixed_precision == "bf16"
    config = policy_config(method="pgg", steps=2, lr=1e-3, batch_size=4)
    history = train_policy(
        model, tokenizer, sources, labels, mask, config, token_rewards=rewards, accelerator=accelerator
    )
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)  # the training forwards ran in bf16
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    seen.clear()
    with torch.no_grad():
        model(input_ids=labels[:2], attention_mask=mask[:2].long(), decoder_input_ids=labels[:2])
    assert seen == [torch.float32]  # the autocast wrapper is gone after training
    hook.remove()
    make_accelerator(Hardware(device="cpu"))  # back to fp32 for the rest of the session
