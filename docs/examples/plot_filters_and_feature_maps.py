"""
Learned filters and feature maps
================================

What the seed network's convolution learns: its eight 3x3 filters after
training, and the eight feature maps they produce from one digit, before and
after the 2x2 max pooling.  The layers can be called one at a time
(``layer.forward``), on float NCHW batches scaled as ``fit`` scales uint8
images, ``x / 255 - 0.5``.
"""

import matplotlib.pyplot as plt
import numpy as np

import cnnext as cx

(X, y), (Xt, yt) = cx.datasets.load_sample()
model = cx.models.seed_cnn(seed=1)
model.fit(X, y, epochs=3, batch_size=1, optimizer=cx.optim.SGD(lr=0.005), seed=1,
          progress=False)
loss, accuracy = model.evaluate(Xt, yt)
print(f"test accuracy {accuracy:.1%}")

conv, pool = model.layers[0], model.layers[1]
filters = conv.params["weight"][:, 0]  # (8, 3, 3)

fig, axes = plt.subplots(1, 8, figsize=(9, 1.6), layout="constrained")
limit = np.abs(filters).max()
for k, ax in enumerate(axes):
    ax.imshow(filters[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"filter {k}", fontsize=8)
    ax.set_axis_off()
fig.suptitle("the 8 learned 3x3 filters (red positive, blue negative)")

# %%
# Feature maps of one test digit
# ------------------------------

image = Xt[:1, None].astype(np.float32) / 255 - 0.5  # (1, 1, 28, 28)
maps = conv.forward(image)  # (1, 8, 26, 26)
pooled = pool.forward(maps)  # (1, 8, 13, 13)

fig, axes = plt.subplots(2, 9, figsize=(10, 2.6), layout="constrained")
axes[0, 0].imshow(Xt[0], cmap="gray_r")
axes[0, 0].set_title(f"digit {yt[0]}", fontsize=8)
axes[1, 0].set_axis_off()
for k in range(8):
    axes[0, k + 1].imshow(maps[0, k], cmap="viridis")
    axes[0, k + 1].set_title(f"conv {k}", fontsize=8)
    axes[1, k + 1].imshow(pooled[0, k], cmap="viridis")
    axes[1, k + 1].set_title(f"pooled {k}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("feature maps: after the convolution (26x26) and after the max pooling (13x13)")
plt.show()
