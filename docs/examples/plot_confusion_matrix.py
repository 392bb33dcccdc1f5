"""
A confusion matrix on the test set
==================================

Which classes the seed network confuses.  This example uses Fashion-MNIST
when it is on the machine (Debian's and Ubuntu's ``apt-get install
dataset-fashion-mnist``, or already in the data home; nothing is
downloaded here), and the MNIST sample bundled with cnnext otherwise.
``predict`` gives the class probabilities of every test image; the matrix
counts, for each true class (row), how often each class was predicted
(column).
"""

import matplotlib.pyplot as plt
import numpy as np

import cnnext as cx

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]

try:
    (X, y), (Xt, yt) = cx.datasets.load_fashion_mnist(download=False)
    name, classes = "Fashion-MNIST", FASHION_CLASSES
    X, y = X[:20000], y[:20000]  # one epoch on a third of the training set keeps this quick
except FileNotFoundError:
    (X, y), (Xt, yt) = cx.datasets.load_sample()
    name, classes = "the bundled MNIST sample", [str(digit) for digit in range(10)]

model = cx.models.seed_cnn(seed=0)
model.fit(X, y, epochs=1, batch_size=1, optimizer=cx.optim.SGD(lr=0.005), seed=0,
          progress=False)
predicted = model.predict(Xt).argmax(axis=1)
print(f"{name}: test accuracy {np.mean(predicted == yt):.1%} on {len(yt):,} images")

matrix = np.zeros((10, 10), dtype=np.int64)
np.add.at(matrix, (yt, predicted), 1)

fig, ax = plt.subplots(figsize=(6.5, 5.5), layout="constrained")
image = ax.imshow(matrix, cmap="Blues")
for true in range(10):
    for guess in range(10):
        count = matrix[true, guess]
        if count:
            ax.text(guess, true, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max() / 2 else "black")
ax.set_xticks(range(10), classes, rotation=45, ha="right", fontsize=8)
ax.set_yticks(range(10), classes, fontsize=8)
ax.set_xlabel("predicted class")
ax.set_ylabel("true class")
ax.set_title(f"seed network on {name}: test set")
fig.colorbar(image, ax=ax, shrink=0.8, label="images")

# %%
# The classes most often taken for another:

errors = matrix - np.diag(np.diag(matrix))
for flat in np.argsort(errors, axis=None)[::-1][:3]:
    true, guess = divmod(int(flat), 10)
    print(f"{classes[true]} taken for {classes[guess]}: {errors[true, guess]} times")
