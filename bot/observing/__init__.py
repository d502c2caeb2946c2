"""Watching the database while the change migrates: the catalog and its diff (`schema`),
the DDL the server executed (`ddl`), the statement log (`sqllog`) and the locks taken
(`locks`). Facts only; judging them is `bot.judging`'s.

May import nothing of Gatekeeper's but the shared root modules.
"""
