"""E-mail: the message templates and their delivery by SMTP (or to files in local mode)."""
