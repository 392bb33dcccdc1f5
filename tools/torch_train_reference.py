"""Train `cnnext train`'s default network in PyTorch, for the README's accuracy comparison.

Usage:
    python tools/torch_train_reference.py fashion-mnist --seed 0
    cnnext train --dataset fashion-mnist --threads 1 --seed 0      # the figure it is compared with

The same run as ``cnnext train --model seed`` with the same --seed: the
notebook's network (Conv2d(1, 8, 3, no bias) -> MaxPool2d(2) -> Linear(1352,
10)) starting from the weights ``cnnext.models.seed_cnn(seed=S)`` draws,
inputs scaled as x / 255 - 0.5, softmax cross-entropy, per-image SGD, the
examples visited in the order ``Sequential.fit(seed=S)`` visits them, one
thread.  Needs torch (not a cnnext dependency).
"""

import argparse
import time

import numpy as np
import torch

from cnnext import datasets, models

LOADERS = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist,
           "sample": datasets.load_sample}


def scaled(images):
    return torch.from_numpy((images.astype(np.float32) / 255 - 0.5)[:, None])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=LOADERS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset]()
    x_train, x_test = scaled(x_train), scaled(x_test)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)

    conv = torch.nn.Conv2d(1, 8, 3, bias=False)
    dense = torch.nn.Linear(8 * 13 * 13, 10)
    initial = models.seed_cnn(seed=args.seed)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(initial.layers[0].params["weight"]))
        dense.weight.copy_(torch.from_numpy(initial.layers[3].params["weight"]))
        dense.bias.copy_(torch.from_numpy(initial.layers[3].params["bias"]))
    net = torch.nn.Sequential(conv, torch.nn.MaxPool2d(2), torch.nn.Flatten(), dense)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    # Sequential.fit draws each epoch's order as default_rng(seed).permutation(n).
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        began, total, correct = time.perf_counter(), 0.0, 0
        order = rng.permutation(len(x_train))
        for i in order:
            x, y = x_train[i:i + 1], y_train[i:i + 1]
            optimizer.zero_grad(set_to_none=True)
            logits = net(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            total += loss.item()
            correct += int(logits.argmax(1).item() == y.item())
        seconds = time.perf_counter() - began
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(order):.4f}  accuracy "
              f"{correct / len(order):.4f}  {len(order) / seconds:.0f} img/s", flush=True)
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    print(f"test accuracy: {accuracy:.2%} ({len(y_test):,} images)")
    print(f"total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
