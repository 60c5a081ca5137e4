"""Autograd bridges: each framework's custom-gradient hook over a measure's value and vjp (imported lazily)."""
