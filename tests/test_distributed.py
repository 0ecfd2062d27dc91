"""2-process gloo DDP through torchrun on CPU, launched as users do (`torchrun -m posekit train`):
it trains, ranks stay in sync, and it matches one process with the same global batch."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posekit.engine.checkpoint import load_checkpoint

HERE = Path(__file__).parent


def test_torchrun_two_processes_match_single_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    recipe = tmp_path / "tiny.yaml"
    # no augmentation noise and no dropout: nothing random differs between ranks, so DDP must
    # reproduce the single-process run up to float summation order
    recipe.write_text(yaml.safe_dump({
        "imports": ["tiny_task"], "task": "tiny", "name": "tiny", "model": {"args": {"dropout": 0.0}},
        "data": {"noise": 0.0}, "train": {"batch_size": 8, "max_steps": 12, "val_every": 6, "lr": 5.0e-3,
                                          "progress": False}}))
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "posekit", "train", str(recipe),
                          f"out_dir={tmp_path / 'ddp'}"], capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert "max parameter difference across 2 processes = 0" in ddp.stdout, ddp.stdout
    single = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    a = load_checkpoint(tmp_path / "ddp" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "one" / "tiny" / "last.pt")
    assert a["step"] == b["step"] == 12
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert diff < 1e-5, diff
    rows = list(csv.DictReader((tmp_path / "ddp" / "tiny" / "metrics.csv").open()))
    val = [float(r["val/mse"]) for r in rows if r.get("val/mse")]
    assert len(val) == 2 and val[1] < val[0]  # it trains


def test_torchrun_with_a_real_family_recipe(tmp_path):
    """The GMH-MDN synthetic recipe (BatchNorm, dropout, dataset statistics in buffers) under 2 processes."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    recipe = HERE.parent / "configs" / "h36m_synthetic.yaml"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "posekit", "train", str(recipe),
                           f"out_dir={tmp_path}", "train.max_steps=20", "train.val_every=10", "model.args.width=64",
                           "data.synthetic_train=512", "data.synthetic_val=64", "train.progress=false"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max parameter difference across 2 processes = 0" in proc.stdout
    assert proc.stdout.count("run saved in") == 1  # rank 0 speaks for the run
    ckpt = load_checkpoint(tmp_path / "h36m_synthetic" / "last.pt")
    assert ckpt["step"] == 20 and ckpt["config"]["train"]["batch_size"] == 64


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_agents_restart_a_killed_worker_and_resume_on_their_own(tmp_path):
    """Two torchrun agents (--nnodes=2, c10d rendezvous on 127.0.0.1) train like two nodes. The
    rank-1 worker is SIGKILLed mid-run; torchrun (--max-restarts=1) restarts the workers, which
    find the run's last.pt (train.resume=auto) and finish. The result matches an uninterrupted
    single-process run within DDP tolerance, and metrics.csv logs every step once."""
    import signal
    import time
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "imports": ["test_faults"], "task": "tiny_faults", "name": "two_nodes", "model": {"args": {"dropout": 0.0}},
        "data": {"announce": True, "sleep": 0.05},
        "train": {"batch_size": 8, "max_steps": 24, "val_every": 12, "save_every": 4, "lr": 5.0e-3, "log_every": 1,
                  "progress": False, "tensorboard": False, "resume": "auto"}}))
    port = _free_port()
    agents = [subprocess.Popen([torchrun, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
                                f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=faults", "--max-restarts=1",
                                "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'ddp'}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE.parent)
              for _ in range(2)]
    t0 = time.time()
    single = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'one'}",
                             "data.sleep=0", "data.announce=false"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert single.returncode == 0, single.stdout + single.stderr
    killed, outputs = None, ["", ""]
    import selectors
    sel = selectors.DefaultSelector()
    for i, a in enumerate(agents):
        sel.register(a.stdout, selectors.EVENT_READ, i)
    open_streams = 2
    while open_streams:
        assert time.time() - t0 < 900, "".join(outputs)
        for key, _ in sel.select(timeout=5):
            line = key.fileobj.readline()
            if not line:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            outputs[key.data] += line
            words = line.split()
            if (killed is None and len(words) == 8 and words[0] == "STEP" and words[3] == "1" and words[7] == "0"
                    and int(words[1]) >= 10):
                killed = int(words[1])
                os.kill(int(words[5]), signal.SIGKILL)  # the rank-1 worker, first incarnation
    for a in agents:
        a.wait(timeout=120)
    out = "".join(outputs)
    assert killed is not None, out
    assert all(a.returncode == 0 for a in agents), out
    assert "resumed from" in out and "restart 1" in out, out
    assert "max parameter difference across 2 processes = 0" in out
    run = tmp_path / "ddp" / "two_nodes"
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(tmp_path / "one" / "two_nodes" / "last.pt")
    assert a["step"] == b["step"] == 24
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert diff < 1e-5, diff
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r.get("loss")] == list(range(1, 25))
    print(f"two-node fault run: killed at step {killed}, {time.time() - t0:.0f} s")


# --- BatchNorm under DDP on CPU/gloo ---------------------------------------------------------
def _sync_bn_worker(rank: int, port: int) -> None:
    """One of 2 gloo processes: posekit's CPU sync BatchNorm on half of a batch must give what
    nn.BatchNorm gives on the whole batch (outputs, running statistics, input and weight gradients)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from posekit.engine import sync_batchnorm
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for bn, shape in [(nn.BatchNorm1d, (8, 5)), (nn.BatchNorm1d, (8, 5, 7)), (nn.BatchNorm2d, (8, 5, 4, 3))]:
            gen = torch.Generator().manual_seed(7)  # the same data on both ranks
            x = torch.randn(*shape, generator=gen) * 3 + 2
            gy = torch.randn(*shape, generator=gen)
            ref = bn(5, momentum=0.3)
            with torch.no_grad():
                ref.weight.uniform_(0.5, 1.5, generator=gen)
                ref.bias.normal_(generator=gen)
            model = nn.Sequential(bn(5, momentum=0.3))
            model[0].load_state_dict(ref.state_dict())
            plain = bn(5, momentum=0.3)
            plain.load_state_dict(ref.state_dict())
            assert sync_batchnorm.convert(model) == (1, [])
            assert isinstance(model[0], bn) and list(model.state_dict()) == ["0." + k for k in ref.state_dict()]
            half = slice(4 * rank, 4 * rank + 4)
            xr = x.clone().requires_grad_()
            (ref(xr) * gy).sum().backward()
            for _ in range(2):  # twice: the running statistics follow the global batch step after step
                model.zero_grad()
                xs = x[half].clone().requires_grad_()
                ys = model(xs)
                (ys * gy[half]).sum().backward()
            ref(x.clone())  # the reference's second step (statistics only)
            grads = torch.cat([model[0].weight.grad, model[0].bias.grad])
            dist.all_reduce(grads)  # what DDP sums before averaging

            def close(a, b, what):
                err = float((a.detach() - b.detach()).abs().max()) / max(1.0, float(b.detach().abs().max()))
                assert err < 1e-6, f"{bn.__name__}{shape} {what}: relative difference {err:.3g}"
            close(ys, _train_out(ref, x)[half], "output")
            close(xs.grad, xr.grad[half], "input gradient")
            close(grads, torch.cat([ref.weight.grad, ref.bias.grad]), "weight/bias gradient")
            close(model[0].running_mean, ref.running_mean, "running_mean")
            close(model[0].running_var, ref.running_var, "running_var")
            assert int(model[0].num_batches_tracked) == int(ref.num_batches_tracked) == 2
            # without the synchronisation each process normalises its 4 samples: clearly different
            assert float((plain(x[half]) - _train_out(ref, x)[half]).abs().max()) > 1e-2
            model.eval()  # eval mode: plain BatchNorm with the (shared) running statistics
            close(model(x[half]), ref.eval()(x)[half], "eval output")
    finally:
        dist.destroy_process_group()


def _train_out(bn, x):
    """`bn`'s training-mode output on `x` without touching its running statistics."""
    import torch.nn.functional as F
    return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


def test_cpu_sync_batchnorm_on_two_processes_equals_batchnorm_on_the_whole_batch():
    import torch.multiprocessing as mp
    mp.spawn(_sync_bn_worker, args=(_free_port(),), nprocs=2, join=True)


def test_ddp_batchnorm_layers_are_synchronised_only_where_a_process_group_has_several_processes():
    """One process: the model is returned untouched (no note, no class change)."""
    import torch
    from torch import nn

    from posekit.engine.distributed import DistInfo, sync_batchnorm
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert sync_batchnorm(model, torch.device("cpu"), DistInfo()) is model and type(model[1]) is nn.BatchNorm1d


def test_ddp_batchnorm_that_cannot_be_synchronised_is_named_in_one_warning(capsys):
    """CPU under DDP: plain BatchNorm layers become synchronised in place (same objects, still
    BatchNorm instances, same state_dict keys); a BatchNorm subclass with its own forward cannot
    be, and neither can any layer on a device without a synchronised BatchNorm: a warning names
    them and says the run is not the single-process run."""
    import torch
    from torch import nn

    from posekit.engine.distributed import DistInfo, sync_batchnorm

    class OwnBN(nn.BatchNorm2d):
        pass
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), OwnBN(4))
    keys, first = list(model.state_dict()), model[1]
    with pytest.warns(UserWarning, match=r"BatchNorm: 1 layer\(s\) \(3\) cannot be synchronised on cpu under DDP"):
        assert sync_batchnorm(model, torch.device("cpu"), DistInfo(world_size=2)) is model
    assert model[1] is first and isinstance(first, nn.BatchNorm2d) and type(first) is not nn.BatchNorm2d
    assert type(model[3]) is OwnBN and list(model.state_dict()) == keys
    assert "BatchNorm: 1 layer(s) use statistics synchronised across the 2 processes" in capsys.readouterr().out
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(model[1](model[0](x)), nn.functional.batch_norm(
        model[0](x), None, None, first.weight, first.bias, True))  # no process group: plain BatchNorm

    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with pytest.warns(UserWarning, match=r"cannot be synchronised on meta under DDP; each of the 2 processes "
                                         r"normalises its own part of the batch"):
        sync_batchnorm(other, torch.device("meta"), DistInfo(world_size=2))
    assert type(other[1]) is nn.BatchNorm1d


_BN_TASK = '''
import torch.nn as nn
from posekit.families import register_task
from tiny_task import TinyTask


@register_task
class TinyBNTask(TinyTask):
    """tiny with BatchNorm after each hidden layer (training-mode statistics under DDP)."""
    name = "tiny_bn"

    def build_model(self):
        # no bias before BatchNorm: its true gradient is 0, and Adam would turn the float noise
        # of that 0 (which differs with the summation order) into lr-sized steps
        return nn.Sequential(nn.Linear(8, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
                             nn.Linear(32, 32, bias=False), nn.BatchNorm1d(32, momentum=0.3), nn.ReLU(),
                             nn.Linear(32, 4))
'''


def test_torchrun_two_processes_with_batchnorm_match_single_process(tmp_path):
    """BatchNorm in training mode, the global batch of 8 split 4 + 4 over two gloo processes: the
    weights, the running statistics and the EMA after 12 steps equal one process's within 1e-5
    (each process normalising only its own 4 samples, they differed by 0.21 here)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    (tmp_path / "tiny_bn_task.py").write_text(_BN_TASK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(HERE)])}
    recipe = tmp_path / "tiny_bn.yaml"
    recipe.write_text(yaml.safe_dump({
        "imports": ["tiny_bn_task"], "task": "tiny_bn", "name": "tiny_bn", "data": {"noise": 0.0},
        "train": {"batch_size": 8, "max_steps": 12, "val_every": 12, "lr": 5.0e-3, "progress": False,
                  "ema_decay": 0.9}}))
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "posekit", "train", str(recipe),
                          f"out_dir={tmp_path / 'ddp'}"], capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert "BatchNorm: 2 layer(s) use statistics synchronised across the 2 processes" in ddp.stdout, ddp.stdout
    assert "max parameter difference across 2 processes = 0" in ddp.stdout, ddp.stdout
    single = subprocess.run([sys.executable, "-m", "posekit", "train", str(recipe), f"out_dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    assert "BatchNorm:" not in single.stdout
    a = load_checkpoint(tmp_path / "ddp" / "tiny_bn" / "last.pt")
    b = load_checkpoint(tmp_path / "one" / "tiny_bn" / "last.pt")
    assert a["step"] == b["step"] == 12
    assert list(a["model"]) == list(b["model"])  # plain BatchNorm keys: loads into the one-process model
    for part in ("model", "ema"):
        diff = {k: float((a[part][k].float() - b[part][k].float()).abs().max()) for k in a[part]}
        assert max(diff.values()) < 1e-5, (part, sorted(diff.items(), key=lambda kv: -kv[1])[:3])


def _control_group_worker(rank: int, port: int):
    import torch
    import torch.distributed as dist

    from posekit.engine.distributed import DistInfo, any_rank, gather
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        info = DistInfo(rank, rank, 2, torch.device("cpu"), control=dist.new_group(backend="gloo"))
        assert any_rank(rank == 1, info) is True  # one rank's flag stops both
        assert any_rank(False, info) is False
        assert gather({"rank": rank}, info) == [{"rank": 0}, {"rank": 1}]
    finally:
        dist.destroy_process_group()


def test_the_loops_agreements_run_over_the_host_side_control_group():
    """With NCCL as the main backend, `setup` adds a gloo group so that the per-step agreements
    (stop, fatal record) and the NaN-check gather are CPU messages, not GPU reads; here both
    run over such a group between two processes and agree."""
    import torch.multiprocessing as mp
    mp.spawn(_control_group_worker, args=(_free_port(),), nprocs=2, join=True)
