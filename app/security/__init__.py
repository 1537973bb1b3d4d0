"""Password hashing, secret digests, page headers: the security primitives."""
