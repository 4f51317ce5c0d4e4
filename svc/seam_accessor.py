"""Door access codes: generated locally, or programmed on the pod's Seam lock."""

import secrets


def generate_access_code(length: int) -> str:
    """A code of `length` digits from the OS's secure random source (leading zeros allowed)."""
    return "".join(secrets.choice("0123456789") for _ in range(length))
