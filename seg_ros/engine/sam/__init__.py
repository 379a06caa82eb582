"""The SAM-family runtime over transformers: loading, transforms, the streaming tracker, its
bounded memory plan, the SAM 3 detector, and the one adapter over private library calls."""
