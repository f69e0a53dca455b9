"""normgen dev-board images and host driver."""
