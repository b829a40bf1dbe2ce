//! Staff in chat (Discord): the pure parser of the commands they type or
//! give as slash commands. The adapter that connects to Discord, posts
//! notifications from the chat outbox and runs commands through
//! `Intake::act` builds on it.

pub mod command;
pub mod desk;
pub mod discord;
pub mod notify;
