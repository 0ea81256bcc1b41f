"""The target model zoo (see README.md in this folder)."""
