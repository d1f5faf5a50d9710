"""Thin adapters for aiogram, python-telegram-bot and pyTelegramBotAPI (telebot).

Import the one you use: ``botscale.adapters.aiogram``, ``botscale.adapters.ptb``
or ``botscale.adapters.telebot``.  Each needs its framework's extra.
"""
