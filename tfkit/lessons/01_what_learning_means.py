# %% [markdown]
# # Lesson 1. What "learning" means: fit a straight line y ≈ m·x + b by gradient descent
#
# A model is a function with adjustable numbers. Here the function is a line and the numbers
# are its slope `m` and intercept `b`. We make noisy points around a line whose true `m` and
# `b` we know, start from a random guess, and repeat:
#
# 1. **guess**: ŷ = m·x + b (the forward pass)
# 2. **measure**: L = mean((ŷ − y)²) (the loss)
# 3. **blame**: ∂L/∂m, ∂L/∂b (the gradients, by the chain rule)
# 4. **nudge**: w_new = w_old − η·∇L (the update; η is the learning rate)
#
# The first steps are printed with every number, then `m` and `b` are watched converging to
# the truth, drawn here and written to TensorBoard one point per step.
#
# This notebook is also a script: `tfkit tutorial 1 [--fast]`, or
# `python tfkit/lessons/01_what_learning_means.py [--fast] [--workdir DIR]`. In Jupyter,
# `TFKIT_LESSON_FAST=1` takes the fast path (fewer points and steps).

# %%
import importlib
import os
import shutil

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfkit import datasets, tutorials  # noqa: E402

FAST, WORKDIR = tutorials.setup()  # FAST: fewer points and steps; WORKDIR: what it writes
TRUE_M, TRUE_B = 3.0, 2.0
LEARNING_RATE = 0.3  # η: how far each step moves against the gradient
N_POINTS, N_STEPS = (1_000, 60) if FAST else (20_000, 300)

# %% [markdown]
# ## The data, and a random guess
#
# The points lie around the line y = 3·x + 2, with noise of standard deviation 0.1. The
# model starts from random numbers: it knows nothing yet.

# %%
x, y = datasets.make_linear(N_POINTS, slope=TRUE_M, intercept=TRUE_B, noise=0.1, seed=0)
x, y = tf.constant(x[:, 0]), tf.constant(y)
print(f"{N_POINTS} noisy points around the line y = {TRUE_M}·x + {TRUE_B}; "
      f"x is uniform in [-1, 1], the noise has standard deviation 0.1")

rng = np.random.default_rng(7)
m = tf.Variable(rng.normal(), dtype=tf.float32, name="m")
b = tf.Variable(rng.normal(), dtype=tf.float32, name="b")

# %% [markdown]
# ## One step: the loss and its gradients, twice
#
# L = mean((m·x + b − y)²). The chain rule gives
# ∂L/∂m = mean(2·(ŷ − y)·x) and ∂L/∂b = mean(2·(ŷ − y)).
# `tf.GradientTape` records the forward pass and works these out by itself; for a line we can
# check it against the formula, for a deep network only the tape is practical.


# %%
def loss_and_gradients(m, b, x, y):
    with tf.GradientTape() as tape:
        prediction = m * x + b  # 1. guess
        loss = tf.reduce_mean((prediction - y) ** 2)  # 2. measure
    grad_m, grad_b = tape.gradient(loss, [m, b])  # 3. blame
    error = prediction - y
    by_hand = (tf.reduce_mean(2 * error * x), tf.reduce_mean(2 * error))
    return loss, (grad_m, grad_b), by_hand


def show_step(step, m, b, loss, grads, by_hand):
    """Print one turn of guess → loss → gradient → update with every number."""
    grad_m, grad_b = float(grads[0]), float(grads[1])
    new_m, new_b = float(m) - LEARNING_RATE * grad_m, float(b) - LEARNING_RATE * grad_b
    print(f"\nstep {step}: the guess is m = {float(m):+.4f}, b = {float(b):+.4f}")
    print(f"  loss      L = mean((m·x + b − y)²) = {float(loss):.4f}")
    print(f"  gradient  ∂L/∂m = {grad_m:+.4f}  (formula mean(2(ŷ−y)·x) = {float(by_hand[0]):+.4f})")
    print(f"            ∂L/∂b = {grad_b:+.4f}  (formula mean(2(ŷ−y))   = {float(by_hand[1]):+.4f})")
    print(f"  update    m ← {float(m):+.4f} − {LEARNING_RATE}·({grad_m:+.4f}) = {new_m:+.4f}")
    print(f"            b ← {float(b):+.4f} − {LEARNING_RATE}·({grad_b:+.4f}) = {new_b:+.4f}")


# %% [markdown]
# ## The loop: guess, measure, blame, nudge, again and again
#
# Every step is also written to TensorBoard (`loss`, `m`, `b` and the two gradients), and kept
# in `history` to draw below.

# %%
logdir = os.path.join(WORKDIR, "tensorboard_logs", "01_what_learning_means")
shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves
writer = tf.summary.create_file_writer(logdir)
history = {"loss": [], "m": [], "b": []}

print(f"The first steps, every number shown (η, the learning rate, is {LEARNING_RATE}):")
every = N_STEPS // 10
for step in range(N_STEPS):
    loss, grads, by_hand = loss_and_gradients(m, b, x, y)
    if step < 3:
        show_step(step, m, b, loss, grads, by_hand)
    elif step % every == 0 or step == N_STEPS - 1:
        if step < 3 + every:
            print(f"\nThen the same again and again ({N_STEPS} steps in all):")
            print(f"{'step':>6} {'m':>9} {'b':>9} {'loss':>10}")
        print(f"{step:>6} {float(m):>9.4f} {float(b):>9.4f} {float(loss):>10.6f}")
    with writer.as_default(step=step):
        for name, value in {"loss": loss, "m": m, "b": b,
                            "dL_dm": grads[0], "dL_db": grads[1]}.items():
            tf.summary.scalar(name, value)
    for name, value in (("loss", loss), ("m", m), ("b", b)):
        history[name].append(float(value))
    m.assign_sub(LEARNING_RATE * grads[0])  # 4. nudge: w_new = w_old − η·∇L
    b.assign_sub(LEARNING_RATE * grads[1])
writer.close()

# %% [markdown]
# ## What to look at
#
# On the left the loss falls fast, then flattens; on the right `m` and `b` climb to their true
# values 3 and 2 (dashed). The loss cannot reach 0: it stops near 0.01 = 0.1², the noise's
# variance, because no line can predict noise.

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
left.plot(history["loss"])
left.axhline(0.01, color="gray", linestyle=":", label="0.01: the noise's variance")
left.set(title="Loss", xlabel="step", ylabel="mean squared error", yscale="log")
left.legend()
for name, truth, color in (("m", TRUE_M, "tab:blue"), ("b", TRUE_B, "tab:orange")):
    right.plot(history[name], color=color, label=f"{name} (truth {truth:g})")
    right.axhline(truth, color=color, linestyle="--", alpha=0.6)
right.set(title="m and b converging to the truth", xlabel="step")
right.legend()
tutorials.show(figure, os.path.join(WORKDIR, "01_loss_and_m_b.png"))

# %% [markdown]
# ## How close did it get?
#
# The noise is random, so even the best possible line (least squares, solved in closed form)
# misses the truth a little: that is the floor. Gradient descent should land next to it.

# %%
m, b = float(m), float(b)
best_m, best_b = np.polyfit(x.numpy(), y.numpy(), 1)
print(f"learned      m = {m:.4f}, b = {b:.4f}")
print(f"truth        m = {TRUE_M:.4f}, b = {TRUE_B:.4f}")
print(f"best fit     m = {best_m:.4f}, b = {best_b:.4f}  (least squares on these points)")
error_m, error_b = abs(m - TRUE_M) / TRUE_M, abs(b - TRUE_B) / TRUE_B
print(f"off by       m: {100 * error_m:.2f} %, b: {100 * error_b:.2f} %")
if max(error_m, error_b) > 0.02:
    raise RuntimeError("m or b is more than 2 % from the truth: try more steps")

# %% [markdown]
# ## In TensorBoard
#
# Scalars: `loss` falls fast then flattens; `m` and `b` climb to 3 and 2; `dL_dm` and `dL_db`
# shrink toward 0: at the bottom of the loss there is no downhill left.

# %%
print(f"Wrote: {logdir}")
print(f"Look at: tensorboard --logdir {logdir}")
