r"""The same SimCLR train step in PyTorch on the CPU, to compare against sslax's in one run.

The network and step mirror sslax's `configs/simclr.py:cpu` model: ResNet-18 with the
CIFAR stem (3x3/1 conv, no max-pool), width x`--width`, BatchNorm after every conv, the
zero-initialised last BN scale of each block, a 512-BN-ReLU-128 projection head (hidden
width `--hidden`), NT-Xent over the 2B views (temperature 0.2) and SGD with momentum and weight decay, as lightly's
SimCLR example trains it. The views are random tensors already on the CPU: the torch
world makes views in data-loader workers, so this times the model's step alone, which
is also what `benchmarks/train_speed.py --parts` reports for sslax (forward,
forward+backward, full step).

Needs PyTorch (the optional `bench` extra, never a dependency of sslax itself):
  pip install -e ".[bench]"
  python benchmarks/torch_reference.py --width=0.25 --batch=256 --crop=32

Prints one JSON object; `--out` writes it to a file too. With `--serve` it instead waits on
stdin and runs one full step per line it reads, printing that step's wall and kernel CPU
seconds, so that `benchmarks/paired_vs_torch.py` can alternate its steps with sslax's.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  """Two 3x3 convs with BN, identity or 1x1-conv+BN shortcut (He et al. 2016)."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    nn.init.zeros_(self.bn2.weight)  # As sslax: each block starts as the identity.
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x))


class ResNet18Cifar(nn.Module):
  """ResNet-18 with the CIFAR stem, returning pooled features."""

  def __init__(self, width_multiplier: float):
    super().__init__()
    base = max(1, round(64 * width_multiplier))
    self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU())
    layers, cin = [], base
    for i in range(4):
      cout = base * 2**i
      for j in range(2):
        layers.append(BasicBlock(cin, cout, 2 if i > 0 and j == 0 else 1))
        cin = cout
    self.stages = nn.Sequential(*layers)
    self.dim = cin

  def forward(self, x):
    return torch.flatten(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
  """SimCLR's NT-Xent over 2B embeddings, views i and i+B being positives."""
  z = F.normalize(z, dim=1)
  n = z.shape[0] // 2
  logits = z @ z.t() / temperature
  logits.fill_diagonal_(float("-inf"))
  targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
  return F.cross_entropy(logits, targets)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier.")
  parser.add_argument("--batch", type=int, default=256, help="Images per step (2 views each).")
  parser.add_argument("--crop", type=int, default=32, help="View side in pixels.")
  parser.add_argument("--hidden", type=int, default=512, help="Width of the projection head's hidden layer.")
  parser.add_argument("--steps", type=int, default=5, help="Timed repetitions of each part (after one warm-up).")
  parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
  parser.add_argument("--channels_last", action="store_true", help="NHWC memory format.")
  parser.add_argument("--out", default=None, help="Optional JSON file for the results.")
  parser.add_argument("--serve", action="store_true",
                      help="Run one full step per line read from stdin and print its seconds (until EOF).")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  encoder = ResNet18Cifar(args.width)
  model = nn.Sequential(encoder, nn.Linear(encoder.dim, args.hidden, bias=False),
                        nn.BatchNorm1d(args.hidden), nn.ReLU(), nn.Linear(args.hidden, 128))
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  views = torch.randn(2 * args.batch, 3, args.crop, args.crop)
  if args.channels_last:
    model = model.to(memory_format=torch.channels_last)
    views = views.contiguous(memory_format=torch.channels_last)
  model.train()

  def forward():
    with torch.no_grad():
      return model(views)

  def forward_backward():
    model.zero_grad(set_to_none=True)
    loss = nt_xent(model(views), 0.2)
    loss.backward()
    return loss

  def full_step():
    loss = forward_backward()
    optimizer.step()
    return loss

  def timed(fn):
    fn()
    start = time.perf_counter()
    for _ in range(args.steps):
      fn()
    return (time.perf_counter() - start) / args.steps

  if args.serve:
    serve(full_step)
    return
  forward_s, forward_backward_s, step_s = timed(forward), timed(forward_backward), timed(full_step)
  result = {
      "framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
      "channels_last": args.channels_last, "width_multiplier": args.width, "batch_size": args.batch,
      "crop_size": args.crop, "forward_s": round(forward_s, 4), "forward_backward_s": round(forward_backward_s, 4),
      "step_s": round(step_s, 4), "train_images_per_s": round(args.batch / step_s, 1),
  }
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


def serve(full_step) -> None:
  """Runs `full_step` once per line of stdin and prints its wall and kernel (system) CPU time in
  seconds, until EOF."""
  print("ready", flush=True)
  for _ in sys.stdin:
    start, kernel = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
    full_step()
    print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel, flush=True)


if __name__ == "__main__":
  main()
