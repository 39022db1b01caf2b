"""The two workloads every framework measures, as plain constants (imported by both sides).

No framework imports here: the nmelab side (JAX) and the PyTorch side build the same networks from
these numbers, with float32 parameters and inputs drawn at random.
"""

MLP = {"name": "MLP 784-1024-1024-10, batch 256", "sizes": (784, 1024, 1024, 10), "batch": 256}

CNN = {
    "name": "Small CNN (2 conv + 2 dense, max-pool), batch 128, 32x32x3",
    "batch": 128,
    "image": (32, 32, 3),
    "channels": (32, 64),
    "hidden": 128,
    "classes": 10,
}

NUM_PROBES = 10
NUM_ITERS = 20

# Operation keys, in table order: (key, label).
OPERATIONS = (
    ("gradient", "gradient"),
    ("hvp", "H·v"),
    ("hvp_reuse", "H·v, linearized once (graph reused)"),
    ("gnvp", "GN·v"),
    ("nmevp", "NME·v"),
    ("trace", f"Hutchinson trace of H, {NUM_PROBES} probes"),
    ("top_eigenvalue", f"top eigenvalue, {NUM_ITERS} Lanczos or power steps"),
)
