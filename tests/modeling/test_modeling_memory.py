"""Memory bank: Sinkhorn targets, the EMA rule, and identical anchors across ``torch.distributed`` ranks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mmsa_hf.modeling import MMSAForPreTraining
from mmsa_hf.modeling.memory import MMSAMemoryBank, gather_across_processes, sinkhorn
from mmsa_modeling_testutils import tiny_config


def _bank(rule="ema", K=6, D=4, momentum=0.5):
    config = SimpleNamespace(
        memory_num_anchors=K, hidden_size=D, memory_temperature=0.1, memory_update_rule=rule, memory_ema_momentum=momentum
    )
    bank = MMSAMemoryBank(config)
    with torch.no_grad():
        bank.anchors.copy_(F.normalize(torch.randn(K, D, generator=torch.Generator().manual_seed(0)), dim=-1))
    return bank


def test_sinkhorn_balances_assignments():
    scores = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    q = sinkhorn(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(32))
    assert q.sum(dim=0).std() < sinkhorn(scores, 0.05, 0).sum(dim=0).std()  # more balanced than plain sharpening
    torch.testing.assert_close(sinkhorn(scores, 0.05, 0), torch.softmax(scores / 0.05, dim=-1))


def test_ema_update_matches_the_formula():
    bank = _bank(momentum=0.5)
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    before = bank.anchors.detach().clone()
    assignment = (F.normalize(z, dim=-1) @ before.t()).argmax(-1)
    used = bank.ema_update(z)
    assert used == assignment.unique().numel()
    for k in range(before.size(0)):
        members = F.normalize(z, dim=-1)[assignment == k]
        if len(members):
            expected = F.normalize(0.5 * before[k] + 0.5 * members.mean(0), dim=0)
            torch.testing.assert_close(bank.anchors[k], expected)
        else:
            assert torch.equal(bank.anchors[k], before[k])


def test_gather_is_identity_without_distributed():
    x = torch.randn(3, 2)
    assert gather_across_processes(x) is x


WORKER = textwrap.dedent(
    r'''
    import importlib.util, os, sys
    from types import SimpleNamespace
    import torch
    import torch.nn.functional as F

    spec = importlib.util.spec_from_file_location("mmsa_memory", sys.argv[1])
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)

    def make_bank():
        config = SimpleNamespace(memory_num_anchors=6, hidden_size=4, memory_temperature=0.1,
                                 memory_update_rule="ema", memory_ema_momentum=0.5)
        bank = memory.MMSAMemoryBank(config)
        with torch.no_grad():
            bank.anchors.copy_(F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1))
        return bank

    def local_batch(rank):  # ranks hold different numbers of molecules
        return torch.randn(3 + 2 * rank, 4, generator=torch.Generator().manual_seed(10 + rank))

    def worker(rank, world_size, init_file, out_dir):
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
        bank = make_bank()
        bank.ema_update(local_batch(rank))
        torch.save(bank.anchors.detach(), os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.destroy_process_group()

    if __name__ == "__main__":
        out_dir = sys.argv[2]
        torch.multiprocessing.spawn(worker, args=(2, os.path.join(out_dir, "init"), out_dir), nprocs=2, join=True)
        reference = make_bank()
        reference.ema_update(torch.cat([local_batch(0), local_batch(1)]))
        a, b = (torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(2))
        assert torch.equal(a, b), "ranks disagree"
        torch.testing.assert_close(a, reference.anchors.detach())
        print("DISTRIBUTED-EMA-OK")
    '''
)


def test_ema_update_is_identical_across_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    memory_file = Path(__file__).resolve().parents[2] / "mmsa_hf" / "modeling" / "memory.py"
    result = subprocess.run(
        [sys.executable, str(script), str(memory_file), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "DISTRIBUTED-EMA-OK" in result.stdout


@pytest.mark.parametrize("update_rule", ["ema", "gradient"])
def test_from_pretrained_keeps_the_anchors_trainable_flag_of_the_update_rule(tmp_path, update_rule):
    model = MMSAForPreTraining(tiny_config(memory_update_rule=update_rule))
    model.save_pretrained(tmp_path)
    for loaded in (MMSAForPreTraining.from_pretrained(tmp_path),
                   MMSAForPreTraining.from_pretrained(tmp_path, output_loading_info=True)[0]):
        flags = {name: p.requires_grad for name, p in loaded.named_parameters() if name.endswith("memory.anchors")}
        assert flags, "the pretraining model has a memory bank"
        assert set(flags.values()) == {update_rule == "gradient"}
        torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
