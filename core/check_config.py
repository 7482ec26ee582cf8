"""``python -m core.check_config``: validate the configuration and say what is wrong."""

import sys

from core.config import ConfigError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    mode = "offline demo model" if settings.offline else f"model {settings.CHAT_MODEL}"
    print(f"configuration OK: {settings.AGENT_POOL_SIZE} pooled agent(s), {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
