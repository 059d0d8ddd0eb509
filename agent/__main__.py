"""``python -m agent``: the cara-agent program (as the ``cara-agent`` script)."""

from agent.main import main

main()
