"""
LeNet-5 against the seed network on Fashion-MNIST
=================================================

The seed network (one convolution of 8 filters, a max pooling, a dense
layer: 13,602 parameters) against LeNet-5 (two convolutions with ReLU and
pooling, three dense layers: 61,706 parameters), on Fashion-MNIST's clothes,
a harder task than MNIST's digits.  Both see the same images for the same
number of epochs; the seed network with the notebook's per-image SGD, LeNet-5
with Adam on batches of 64.

Fashion-MNIST is taken from the machine when it is there (Debian's and
Ubuntu's ``apt-get install dataset-fashion-mnist``, or the data home; this
example downloads nothing), and the bundled MNIST sample replaces it
otherwise.  To keep the documentation's build quick, the networks train on
the first 12,000 training images and are tested on all 10,000 test images.
"""

import matplotlib.pyplot as plt

import cnnext as cx

try:
    (X, y), (Xt, yt) = cx.datasets.load_fashion_mnist(download=False)
    name = "Fashion-MNIST"
    X, y = X[:12000], y[:12000]
except FileNotFoundError:
    (X, y), (Xt, yt) = cx.datasets.load_sample()
    name = "the bundled MNIST sample"

runs = {
    "seed network": (cx.models.seed_cnn(seed=0), dict(batch_size=1,
                                                      optimizer=cx.optim.SGD(lr=0.005))),
    "LeNet-5": (cx.models.lenet5(seed=0), dict(batch_size=64, optimizer=cx.optim.Adam())),
}
histories = {}
for label, (model, settings) in runs.items():
    histories[label] = model.fit(X, y, epochs=3, validation_data=(Xt, yt), seed=0,
                                 progress=False, **settings)
    print(f"{label:>12}: {model.num_parameters():>6,} parameters, "
          f"test accuracy {histories[label]['val_accuracy'][-1]:.1%}, "
          f"{sum(histories[label]['seconds']):.1f} s for 3 epochs")

fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
for label, history in histories.items():
    epochs = range(1, history.epochs + 1)
    (line,) = loss_ax.plot(epochs, history["loss"], marker="o", label=f"{label}, training")
    loss_ax.plot(epochs, history["val_loss"], marker="o", linestyle="--",
                 color=line.get_color(), label=f"{label}, test")
    accuracy_ax.plot(epochs, history["val_accuracy"], marker="o", color=line.get_color(),
                     label=label)
loss_ax.set_xlabel("epoch")
loss_ax.set_ylabel("loss")
loss_ax.legend(fontsize=7)
accuracy_ax.set_xlabel("epoch")
accuracy_ax.set_ylabel("test accuracy")
accuracy_ax.legend(fontsize=7)
for ax in (loss_ax, accuracy_ax):
    ax.set_xticks(list(epochs))
fig.suptitle(f"LeNet-5 vs the seed network on {name}")

# %%
# A short run, and not an even one: the seed network updates its weights
# after every image (36,000 steps in these 3 epochs), LeNet-5 after every 64
# (564 steps), and a larger network usually needs more steps to catch up.
# ``cnnext train --dataset fashion-mnist --model lenet5 --batch-size 64
# --optimizer adam --epochs 10`` trains it on the whole training set.
