"""The rules that decide, without SQL: scoped API keys (`keys`), guarded rollouts
(`rollouts`), the settings a task may have (`task_settings`).
"""

__all__: list[str] = []
