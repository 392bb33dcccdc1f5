"""Train models.resnet8 on the full Fashion-MNIST in cnnext and in PyTorch, side by side.

Usage:
    python tools/resnet8_fashion_mnist.py --epochs 3 --seed 0 [--only cnnext|torch]

Both train the same network from the same initial weights (PyTorch's copy
is loaded from cnnext's ``state_dict()``, whose keys it takes as they are),
on the same batches in the same order (``Sequential.fit(seed=S)`` draws
each epoch's order as ``default_rng(S).permutation(n)``), with the same
optimiser and schedule (SGD with momentum 0.9 and weight decay 5e-4, the
rate following ``schedules.CosineDecay(epochs)`` / ``CosineAnnealingLR``
stepped per epoch), inputs scaled as x / 255 - 0.5 in float32, one thread.
Batch normalisation trains on batch statistics and is evaluated with its
running statistics in both.  Prints test accuracy and training time (wall
clock and this thread's CPU time, which other processes on a shared
machine do not inflate).  Needs torch (not a cnnext dependency) and the
data (Debian's dataset-fashion-mnist).
"""

import argparse
import time

import numpy as np

import cnnext
from cnnext import datasets, models, optim, schedules


def train_cnnext(data, args):
    (x_train, y_train), (x_test, y_test) = data
    model = models.resnet8(seed=args.seed)

    def report(model, epoch, logs):
        # Each epoch's line as it ends: a run takes minutes.
        print(f"cnnext epoch {epoch + 1}: loss {logs['loss']:.4f} accuracy "
              f"{logs['accuracy']:.4f} ({logs['seconds']:.1f} s)", flush=True)

    wall, cpu = time.perf_counter(), time.thread_time()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              optimizer=optim.SGD(lr=args.lr, momentum=0.9, weight_decay=5e-4),
              lr_schedule=schedules.CosineDecay(args.epochs), seed=args.seed, progress=False,
              callbacks=[report])
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    _, accuracy = model.evaluate(x_test, y_test)
    return accuracy, wall, cpu


def train_torch(data, args):
    import torch

    nn = torch.nn
    torch.set_num_threads(1)
    (x_train, y_train), (x_test, y_test) = data

    class Residual(nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block = nn.Sequential(*block)
            self.shortcut = None if shortcut is None else nn.Sequential(*shortcut)

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    def basic(c_in, c_out, stride):
        block = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                 nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)]
        shortcut = None
        if stride != 1 or c_in != c_out:
            shortcut = [nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)]
        return [Residual(block, shortcut), nn.ReLU()]

    net = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                        *basic(16, 16, 1), *basic(16, 32, 2), *basic(32, 64, 2),
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),  # GlobalAvgPool2D
                        nn.Linear(64, 10))
    net.load_state_dict({k: torch.from_numpy(v)
                         for k, v in models.resnet8(seed=args.seed).state_dict().items()})
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.from_numpy((x_train.astype(np.float32) / 255 - np.float32(0.5))[:, None])
    labels = torch.from_numpy(y_train)
    rng = np.random.default_rng(args.seed)
    wall, cpu = time.perf_counter(), time.thread_time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        total, correct = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            index = order[start:start + args.batch_size]
            x, y = images[index], labels[index]
            optimizer.zero_grad(set_to_none=True)
            logits = net(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(1) == y).sum())
        scheduler.step()
        print(f"torch epoch {epoch + 1}: loss {total / len(order):.4f} accuracy "
              f"{correct / len(order):.4f}", flush=True)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    net.eval()
    test = torch.from_numpy((x_test.astype(np.float32) / 255 - np.float32(0.5))[:, None])
    with torch.no_grad():
        predicted = torch.cat([net(test[i:i + 256]).argmax(1) for i in range(0, len(test), 256)])
    return float((predicted == torch.from_numpy(y_test)).float().mean()), wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("cnnext", "torch"))
    args = parser.parse_args()
    cnnext.set_num_threads(1)
    data = datasets.load_fashion_mnist()
    results = {}
    for name, train in (("cnnext", train_cnnext), ("torch", train_torch)):
        if args.only in (None, name):
            results[name] = train(data, args)
            accuracy, wall, cpu = results[name]
            print(f"{name}: test accuracy {accuracy:.2%}, training {wall:.1f} s wall, "
                  f"{cpu:.1f} s thread CPU", flush=True)
    if len(results) == 2:
        (ours, _, our_cpu), (theirs, _, their_cpu) = results["cnnext"], results["torch"]
        print(f"accuracy difference {100 * (ours - theirs):+.2f} points; cnnext trains "
              f"{their_cpu / our_cpu:.2f}x as fast (thread CPU time)", flush=True)


if __name__ == "__main__":
    main()
