"""kldiv.apps: the runnable applications behind ``kldiv train``, ``kldiv distill`` and ``kldiv demo``.

A VAE / autoencoder on scikit-learn's bundled digits (:mod:`kldiv.apps.vae`), a character-level GRU language
model on the Python standard library's source (:mod:`kldiv.apps.charlm`), distillation of that model into a
smaller one with :class:`kldiv.nn.DistillationLoss` (:mod:`kldiv.apps.distill`), run folders written atomically
(:mod:`kldiv.apps.runs`) and the demo tour's report (:mod:`kldiv.apps.tour`). Needs the ``apps`` extra
(torch, matplotlib, safetensors, scikit-learn); nothing here downloads anything.
"""
