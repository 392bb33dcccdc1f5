"""
Training curves of the seed network
===================================

The network of the notebook cnnext grew from, which cnnext calls the *seed
network*: one convolution of 8 filters of 3x3, a 2x2 max pooling and a dense
layer to 10 classes (13,602 parameters, no activation), trained one image at
a time with SGD at a learning rate of 0.005, as in the notebook.

``fit`` returns a :class:`~cnnext.history.History`, whose ``plot`` draws
the loss and the accuracy of every epoch, on the training images and on the
validation data given to ``fit``.
"""

import json

import cnnext as cx

(X, y), (Xt, yt) = cx.datasets.load_sample()  # 4,000 + 1,000 real MNIST digits
model = cx.models.seed_cnn(seed=0)
history = model.fit(X, y, epochs=5, batch_size=1, optimizer=cx.optim.SGD(lr=0.005),
                    validation_data=(Xt, yt), seed=0, progress=False)

print(f"{history.epochs} epochs in {sum(history['seconds']):.1f} s")
for key, values in history.items():
    print(f"{key:>13}: " + "  ".join(f"{value:.4f}" for value in values))

history.plot(title="seed network, per-image SGD on the bundled MNIST sample")

# %%
# The figures are plain Python floats in a dict, so they go anywhere a dict
# goes, JSON included:

print(json.dumps(history.last(), indent=1))
