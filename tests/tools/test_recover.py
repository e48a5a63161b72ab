"""recover: distillation brings the slim student back towards its teacher; exact loss
values for KL, MSE and the alpha mix; clear refusals for data and outputs it cannot use."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimgraph as sg
from slimgraph.errors import OutputError
from slimgraph.tools.recover import distill_loss
from tests.hf_models import build


def teacher_and_student(ratio: float = 0.75) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 5))
    return teacher, sg.slim(teacher, (torch.randn(1, 8),), ratio=ratio).model


def gap(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return distill_loss(student(x), teacher(x), temperature=1.0)[0].item()


def test_distillation_brings_the_student_closer_to_the_teacher() -> None:
    teacher, student = teacher_and_student()
    torch.manual_seed(1)
    data = [torch.randn(32, 8) for _ in range(8)]
    held_out = torch.randn(256, 8)
    before = gap(student, teacher, held_out)
    teacher_weights = copy.deepcopy(teacher.state_dict())
    report = sg.recover(student, teacher, data, epochs=4, lr=1e-2, progress=False)
    assert report.steps == 32 and len(report.losses) == 32 and report.distill == "kl"
    assert gap(student, teacher, held_out) < 0.5 * before
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_weights[name]), name  # the teacher never learns
    assert all(p.grad is None for p in teacher.parameters())


def test_steps_pass_over_the_data_as_often_as_needed() -> None:
    teacher, student = teacher_and_student()
    seen = []
    data = [torch.randn(4, 8) for _ in range(3)]
    report = sg.recover(
        student,
        teacher,
        data,
        steps=7,
        progress=False,
        inputs=lambda b: seen.append(b) or b,
    )
    assert report.steps == 7 and len(seen) == 7 and seen[3] is data[0]


def test_modes_are_restored() -> None:
    teacher, student = teacher_and_student()
    teacher.train()
    student.eval()
    training = []
    student.register_forward_hook(lambda m, i, o: training.append(m.training))
    teacher.register_forward_hook(lambda m, i, o: training.append(m.training))
    sg.recover(student, teacher, [torch.randn(2, 8)], progress=False)
    assert training == [False, True]  # teacher in eval, student in train, while recovering
    assert teacher.training and not student.training


def test_alpha_mixes_the_task_loss() -> None:
    teacher, student = teacher_and_student()
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))

    def task(model: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), batch[1])

    with torch.no_grad():
        ce = task(student, (x, y)).item()
        kl = distill_loss(student(x), teacher(x), temperature=3.0)[0].item()
    for alpha, expected in [(0.0, ce), (1.0, kl), (0.25, 0.25 * kl + 0.75 * ce)]:
        s = copy.deepcopy(student)
        report = sg.recover(
            s,
            teacher,
            [(x, y)],
            inputs=lambda b: b[0],
            loss_fn=task,
            alpha=alpha,
            temperature=3.0,
            progress=False,
        )
        assert report.first_loss == pytest.approx(expected, rel=1e-6), alpha


def test_kl_is_the_softened_divergence_times_t_squared() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(4, 7, 10), torch.randn(4, 7, 10)  # token logits: tokens count as batch
    loss, kind = distill_loss(s, t, temperature=2.0)
    p_t = (t / 2).softmax(-1)
    expected = (p_t * (p_t.log() - (s / 2).log_softmax(-1))).sum(-1).mean() * 4
    assert kind == "kl"
    torch.testing.assert_close(loss, expected)


def test_hidden_states_are_matched_by_mse() -> None:
    s = {"last_hidden_state": torch.ones(2, 3, 4)}
    t = {"last_hidden_state": torch.zeros(2, 3, 4), "pooler_output": torch.zeros(2, 4)}
    loss, kind = distill_loss(s, t)
    assert kind == "mse" and loss.item() == 1.0
    with pytest.raises(sg.RecoverError, match="hidden size was cut"):
        distill_loss({"last_hidden_state": torch.ones(2, 3, 2)}, t)
    with pytest.raises(sg.RecoverError, match=r"shape \(2, 3\) but the teacher's is \(2, 4\)"):
        distill_loss(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.filterwarnings("ignore:model.config")
def test_bert_logits_distil_from_keyword_inputs() -> None:
    teacher, inputs = build("bert")
    student = sg.slim(teacher, inputs, ratio=0.5, prune_residual=False).model
    report = sg.recover(student, teacher, [inputs] * 2, steps=3, lr=1e-3, progress=False)
    assert report.steps == 3 and report.distill == "kl"
    assert report.last_loss < report.first_loss


def test_bad_input_is_refused_with_a_reason() -> None:
    teacher, student = teacher_and_student()
    with pytest.raises(sg.RecoverError, match="data gave no batches"):
        sg.recover(student, teacher, [], progress=False)
    with pytest.raises(sg.RecoverError, match="same model"):
        sg.recover(teacher, teacher, [torch.randn(2, 8)], progress=False)
    with pytest.raises(sg.RecoverError, match="one-pass iterator"):
        sg.recover(student, teacher, iter([torch.randn(2, 8)]), epochs=2, progress=False)
    with pytest.raises(sg.RecoverError, match="alpha"):
        sg.recover(student, teacher, [torch.randn(2, 8)], alpha=1.5, progress=False)
    with pytest.raises(sg.RecoverError, match="scalar tensor"):
        sg.recover(student, teacher, [torch.randn(2, 8)], loss_fn=lambda m, b: m(b), progress=False)


def test_the_checkpoint_hook_sees_each_steps_weights_in_eval_mode() -> None:
    teacher, student = teacher_and_student()
    seen = []

    def hook(model: nn.Module, step: int) -> None:
        seen.append((step, model.training, model[0].weight.detach().clone()))

    data = [torch.randn(4, 8) for _ in range(5)]
    report = sg.recover(
        student, teacher, data, lr=1e-2, checkpoint=hook, checkpoint_every=2, progress=False
    )
    assert report.checkpoints == [step for step, _, _ in seen] == [2, 4, 5]  # and the last
    assert not any(training for _, training, _ in seen)
    assert torch.equal(seen[-1][2], student[0].weight)  # the last one holds the final weights
    assert not torch.equal(seen[0][2], seen[1][2])
    assert report.engine == "one process"


def test_ddp_in_one_process_trains_exactly_as_without_it() -> None:
    pytest.importorskip("accelerate", reason="DDP runs through accelerate ([test] installs it)")
    data = [torch.randn(4, 8) for _ in range(4)]
    teacher, alone = teacher_and_student()
    _, through_accelerate = teacher_and_student()
    plain = sg.recover(alone, teacher, data, lr=1e-2, distributed="none", progress=False)
    ddp = sg.recover(through_accelerate, teacher, data, lr=1e-2, distributed="ddp", progress=False)
    assert ddp.losses == plain.losses and ddp.engine == "DDP over 1 process (accelerate)"
    for a, b in zip(alone.parameters(), through_accelerate.parameters()):
        assert torch.equal(a, b)


class _Accelerator:  # what the engine reads of an accelerate.Accelerator
    def __init__(self, kind: str, processes: int) -> None:
        self.distributed_type = f"DistributedType.{kind}"
        self.num_processes = processes
        self.process_index = 0


def test_distributed_set_ups_that_would_train_wrong_are_refused(monkeypatch) -> None:
    teacher, student = teacher_and_student()
    data = [torch.randn(2, 8)]

    def run(**kwargs) -> None:
        sg.recover(student, teacher, data, progress=False, **kwargs)

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(sg.RecoverError, match="needs processes started by torchrun"):
        run(distributed="fsdp")
    with pytest.raises(sg.RecoverError, match="'auto', 'none', 'ddp' or 'fsdp', not 'mpi'"):
        run(distributed="mpi")
    with pytest.raises(sg.RecoverError, match="set up for FSDP; sg.recover runs data-parallel"):
        run(accelerator=_Accelerator("FSDP", 2))
    with pytest.raises(sg.RecoverError, match="checkpoint_every needs a checkpoint hook"):
        run(checkpoint_every=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(sg.RecoverError, match="distributed='none' in one of 2 launched"):
        run(distributed="none")
    with pytest.raises(sg.RecoverError, match="started 2 processes but accelerate joined 1"):
        run(accelerator=_Accelerator("NO", 1))  # each process would train alone


def test_save_shards_what_save_pretrained_writes_and_refuses_the_rest(tmp_path) -> None:
    model, _ = build("llama")
    folder = sg.save(model, tmp_path / "llama", max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert sorted(set(index["weight_map"].values())) == shards and len(shards) > 1
    reloaded = type(model).from_pretrained(folder)
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
    with pytest.raises(OutputError, match="written whole to model.safetensors"):
        sg.save(nn.Linear(2, 2), tmp_path / "linear", max_shard_size="1KB")
    assert not (tmp_path / "linear").exists()  # refused before writing
