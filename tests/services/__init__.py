"""Real servers the tests start themselves (PostgreSQL), and the script that installs them."""
