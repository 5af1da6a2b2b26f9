"""Mixed precision (bf16 autocast on CPU, fp16 + GradScaler on CUDA) and gradient
checkpointing in the same run as a reduced vocabulary."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _integration import assert_same_state, global_batches, plan_for, remap, tiny_bert

from vocab_adapters import apply_plan, revert_plan

EMBEDDING = "bert.embeddings.word_embeddings.weight"


def run(
    device: str, dtype: torch.dtype, checkpointing: bool, scaler: Any = None
) -> dict[str, torch.Tensor]:
    batches = global_batches()
    plan = plan_for(batches)
    model = tiny_bert().to(device)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    applied = apply_plan(plan, model=model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for batch in batches:
        ids = remap(plan, batch).to(device)
        with torch.autocast(device, dtype=dtype):
            loss = model(input_ids=ids, labels=ids).loss
        assert torch.isfinite(loss)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad()
    revert_plan(applied, optimizer=optimizer)
    weight = model.get_input_embeddings().weight
    assert weight.dtype == torch.float32 and weight.device.type == device
    assert optimizer.state[weight]["exp_avg"].shape == weight.shape
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def check_trained(state: dict[str, torch.Tensor]) -> None:
    plan = plan_for(global_batches())
    initial = tiny_bert().state_dict()[EMBEDDING]
    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    assert torch.equal(state[EMBEDDING][dropped], initial[dropped])
    assert not torch.equal(state[EMBEDDING][list(plan.kept)], initial[list(plan.kept)])


def test_bf16_autocast_with_checkpointing_cpu() -> None:
    got = run("cpu", torch.bfloat16, checkpointing=True)
    check_trained(got)
    # Recomputing activations changes nothing: same as the run without checkpointing.
    assert_same_state(got, run("cpu", torch.bfloat16, checkpointing=False), atol=0)


def test_bf16_weights_keep_dtype() -> None:
    plan = plan_for(global_batches())
    model = tiny_bert().to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    applied = apply_plan(plan, model=model)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    revert_plan(applied)
    assert_same_state(model.state_dict(), before, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_grad_scaler_with_checkpointing_cuda() -> None:
    got = run("cuda", torch.float16, checkpointing=True, scaler=torch.amp.GradScaler("cuda"))
    check_trained(got)
