//! The values that cross the store's seam, as plain data.
//!
//! The store looks things up for the pipeline ([`LookupKeys`] in, [`Found`]
//! out) and writes what the pipeline computed ([`IntakePlan`]): the
//! decision's rows, their audit texts, the rendered mails. Nothing here
//! does I/O, renders or decides; the pipeline (`ingest`, `sla`, `service`)
//! fills these values and the store (`store`) writes them as given, so the
//! store needs none of the pipeline's modules and a second backend writes
//! the same plan.

use crate::domain::{Mailbox, MessageId, Severity, Status, TicketNumber};

/// A built mail, ready for the outbox.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Envelope and header recipients.
    pub to: Vec<String>,
    /// Envelope sender.
    pub sender: String,
    /// The subject as written.
    pub subject: String,
    /// Our Message-ID.
    pub message_id: MessageId,
    /// The whole message as it will be sent.
    pub raw: Vec<u8>,
    /// The text body (for the ticket's outgoing article).
    pub body: String,
}

/// A ticket as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketInfo {
    /// Database id.
    pub id: i64,
    /// Public number.
    pub number: TicketNumber,
    /// The requester's address (lower case).
    pub requester: String,
    /// Every participant address (lower case): requester, Cc'd people, …
    pub participants: Vec<String>,
    /// Current status.
    pub status: Status,
    /// Where the customer asked answers to go (the Reply-To of the
    /// requester's latest mail, lower case); `None`: to the requester.
    pub reply_to: Option<String>,
    /// The newest customer mail's Message-ID on the ticket: what a mail of
    /// ours on it answers.
    pub last_inbound: Option<MessageId>,
    /// The newest Message-IDs on the ticket (customer's and ours), oldest
    /// first, at most [`THREAD_IDS`]: the References of a mail of ours.
    pub thread: Vec<MessageId>,
    /// The language recorded for the customer's mails (`None`: a ticket
    /// from before languages were recorded).
    pub language: Option<String>,
}

/// How many of a ticket's Message-IDs the mails ticketd sends on it carry
/// in References.
pub const THREAD_IDS: usize = 10;

impl TicketInfo {
    /// Where mail to the customer on this ticket goes: the reply address
    /// the customer asked for, else the requester.
    pub fn customer_address(&self) -> &str {
        self.reply_to.as_deref().unwrap_or(&self.requester)
    }
}

/// A recorded monitoring incident and its ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// The incident's ticket.
    pub ticket: TicketInfo,
    /// Whether the problem is open (no recovery since).
    pub problem: bool,
    /// Whether the last recovery came within the flap window: a problem now
    /// re-opens the ticket instead of opening a new one.
    pub flapping: bool,
}

/// What a decision does to an incident record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentChange {
    /// The incident key (organisation, host, service).
    pub key: String,
    /// What happened.
    pub event: IncidentEvent,
    /// The alert's state, as text.
    pub state: String,
    /// The alert's one-line summary.
    pub text: String,
    /// For a recovery under a hold-down: when its ticket is resolved if
    /// the problem has not come back by then.
    pub resolve_at: Option<String>,
}

/// The events of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentEvent {
    /// A problem opened a new ticket (or replaced a closed one).
    Opened,
    /// The same problem again: counted.
    Repeated,
    /// A problem again soon after a recovery: counted, ticket re-opened.
    Reopened,
    /// A recovery: the ticket is resolved.
    Recovered,
}

/// What the store must look up for a message before it can be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupKeys {
    /// In-Reply-To and References ids (to find a ticket by stored ids).
    pub thread_ids: Vec<MessageId>,
    /// Ticket numbers proven by our signed Message-IDs among `thread_ids`.
    pub signed_numbers: Vec<TicketNumber>,
    /// The number in the subject tag.
    pub tag_number: Option<TicketNumber>,
    /// For a bounce: ids of the bounced mail.
    pub bounced_ids: Vec<MessageId>,
    /// For a bounce: ticket numbers of the bounced mail (tag or signed id).
    pub bounced_numbers: Vec<TicketNumber>,
    /// Whether In-Reply-To/References name one of our signed notice ids:
    /// the message answers an automatic mail of ours that belongs to no
    /// ticket (a registration notice), and gets no automatic answer.
    pub answers_notice: bool,
    /// Ticket numbers proven by our signed staff mail ids
    /// (`IdSigner::staff_id`) among `thread_ids`: the message answers a
    /// mail of ours to staff about that ticket (an SLA reminder).
    pub staff_numbers: Vec<TicketNumber>,
    /// Whether In-Reply-To/References name one of our signed digest ids:
    /// the message answers a mail of ours to staff about many tickets.
    pub answers_digest: bool,
}

/// What the store found for a message's [`LookupKeys`]: the rows as they
/// are, for the pipeline to read (`ingest::decide::Lookups::from_found`).
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The ticket of the first In-Reply-To/References id stored or sent on
    /// one (in the order of the keys).
    pub by_stored_id: Option<TicketInfo>,
    /// The ticket of the first of our signed ticket numbers.
    pub by_signed_number: Option<TicketInfo>,
    /// The ticket of the first signed staff-mail number.
    pub by_staff_number: Option<TicketInfo>,
    /// The ticket the subject tag names.
    pub by_tag: Option<TicketInfo>,
    /// For a bounce: the ticket of the bounced mail's first stored id.
    pub bounced_by_id: Option<TicketInfo>,
    /// For a bounce: the ticket of the bounced mail's first number.
    pub bounced_by_number: Option<TicketInfo>,
    /// Automatic mails to the would-be confirmation recipient in the last
    /// hour.
    pub auto_mails_last_hour: u32,
    /// The alert's incident record, if any.
    pub incident: Option<FoundIncident>,
    /// The host's incident record (a service alert), if any.
    pub host_incident: Option<FoundIncident>,
    /// Tickets of the sender's organisation opened this quarter.
    pub org_cases: u32,
}

/// An incident row as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundIncident {
    /// The incident's ticket.
    pub ticket: TicketInfo,
    /// Whether the problem is open.
    pub problem: bool,
    /// When it last recovered (`ts` text), if it did.
    pub recovered_at: Option<String>,
}

/// Everything one message changes, computed before the write: the store
/// writes it in one transaction ([`crate::store::write_intake`]) and
/// returns the ids it got. Borrowed text and bytes come from the parsed
/// mail and the decision.
#[derive(Debug)]
pub struct IntakePlan<'a> {
    /// The message's row (from the claim).
    pub message_row: i64,
    /// The commit's time (`ts` text): `created_at` of every row.
    pub now: &'a str,
    /// The message's arrival (`ts` text): a new ticket's receipt.
    pub arrived: &'a str,
    /// The ticket the message opens or joins.
    pub ticket: TicketWrite<'a>,
    /// Audit events `(kind, detail)` in order: of the ticket, or of the
    /// message alone when there is none.
    pub events: Vec<(&'a str, String)>,
    /// For a bounce: one row per failed recipient.
    pub bounces: Vec<BounceRow<'a>>,
    /// Automatic mails to queue, in order (each also an outgoing article
    /// when the message has one).
    pub mails: Vec<QueuedMail>,
    /// What happens to the monitoring incident.
    pub incident: Option<&'a IncidentChange>,
    /// The message's articles on its ticket; `None`: no article (no
    /// ticket, or a repeated alert that only counts).
    pub articles: Option<ArticlesWrite<'a>>,
    /// The message row's final record.
    pub outcome: MessageOutcome<'a>,
}

/// The ticket a message opens or joins.
#[derive(Debug)]
pub enum TicketWrite<'a> {
    /// A new ticket with these columns.
    New(Box<NewTicketRow<'a>>),
    /// An existing ticket's changes.
    Existing(TicketUpdate<'a>),
    /// No ticket: the message is only stored.
    Nothing,
}

/// The columns of a new ticket.
#[derive(Debug)]
pub struct NewTicketRow<'a> {
    /// Its place in the ticket sequence (the number's digits).
    pub seq: i64,
    /// Its public number.
    pub number: TicketNumber,
    /// Subject.
    pub subject: &'a str,
    /// Severity.
    pub severity: Severity,
    /// The rule that set the severity.
    pub rule: Option<&'a str>,
    /// The requester.
    pub requester: &'a Mailbox,
    /// The ticket it refers to.
    pub linked: Option<&'a TicketNumber>,
    /// The requester's organisation.
    pub organisation: Option<&'a str>,
    /// Marks for staff, comma-separated (`None`: none).
    pub flags: Option<String>,
    /// Queue.
    pub queue: Option<&'a str>,
    /// Reply address.
    pub reply_to: Option<&'a str>,
    /// Language of the customer's mails.
    pub language: Option<&'a str>,
    /// Tags.
    pub tags: Vec<&'a str>,
    /// Participants (lower case).
    pub participants: Vec<&'a str>,
    /// Its SLA rows as its clocks start (`None`: no SLA clocks run).
    pub sla: Option<SlaRows>,
}

/// What changes on an existing ticket.
#[derive(Debug)]
pub struct TicketUpdate<'a> {
    /// Database id.
    pub id: i64,
    /// Public number.
    pub number: &'a TicketNumber,
    /// Its new status, if it changes.
    pub status: Option<Status>,
    /// A new reply address (`Some(None)`: back to the requester).
    pub reply_to: Option<Option<&'a str>>,
    /// Participants to add.
    pub new_participants: Vec<&'a str>,
}

/// One failed recipient of a bounce.
#[derive(Debug)]
pub struct BounceRow<'a> {
    /// The recipient, lower case.
    pub recipient: String,
    /// DSN action.
    pub action: &'a str,
    /// DSN status.
    pub status: &'a str,
    /// Diagnostic text.
    pub diagnostic: &'a str,
}

/// A rendered automatic mail to queue.
#[derive(Debug)]
pub struct QueuedMail {
    /// Its outbox kind (`confirmation`, a notice's kind).
    pub kind: &'static str,
    /// The mail.
    pub mail: Outgoing,
    /// Whether it counts against the hourly per-recipient limit.
    pub counts_hourly: bool,
}

/// The articles a message adds to its ticket.
#[derive(Debug)]
pub struct ArticlesWrite<'a> {
    /// The inbound article.
    pub inbound: InboundArticle<'a>,
    /// Internal notes after the outgoing articles.
    pub notes: Vec<String>,
    /// The inbound article's attachments that are kept.
    pub attachments: Vec<AttachmentRow<'a>>,
    /// Message-IDs to record on the ticket besides the queued mails' own
    /// (which the store records with them): the message's.
    pub thread_ids: Vec<&'a str>,
}

/// The inbound article of a message.
#[derive(Debug)]
pub struct InboundArticle<'a> {
    /// The article kind (the message's kind).
    pub kind: &'a str,
    /// Sender address.
    pub from_addr: Option<&'a str>,
    /// Sender name.
    pub from_name: Option<&'a str>,
    /// To addresses, comma-separated.
    pub to_addrs: Option<String>,
    /// Cc addresses, comma-separated.
    pub cc_addrs: Option<String>,
    /// Subject.
    pub subject: &'a str,
    /// Message-ID.
    pub message_id: Option<&'a str>,
    /// Body within the limits.
    pub body: String,
}

/// One kept attachment.
#[derive(Debug)]
pub struct AttachmentRow<'a> {
    /// File name.
    pub filename: &'a str,
    /// Content type.
    pub content_type: &'a str,
    /// The bytes.
    pub content: &'a [u8],
    /// Their SHA-256, hex.
    pub sha256: String,
}

/// A message row's final record.
#[derive(Debug)]
pub struct MessageOutcome<'a> {
    /// What `ingest` reports.
    pub action: &'a str,
    /// What the message is.
    pub kind: &'a str,
    /// Why.
    pub reason: String,
}

/// What a staff action changes, computed before the write
/// ([`crate::store::actions::write_action`]): each part `None` when it
/// does not change.
#[derive(Debug, Default)]
pub struct ActionPlan {
    /// The ticket's row id.
    pub ticket_id: i64,
    /// Its new status.
    pub status: Option<Status>,
    /// Its new severity and the rule text recorded for it.
    pub severity: Option<(Severity, String)>,
    /// Its new assignee: key and name.
    pub assignee: Option<(String, String)>,
    /// A reply to queue.
    pub reply: Option<PlannedReply>,
    /// An internal note: text and author.
    pub note: Option<(String, String)>,
    /// Audit events `(kind, detail)` in order.
    pub events: Vec<(&'static str, String)>,
}

/// A staff member's reply, rendered.
#[derive(Debug)]
pub struct PlannedReply {
    /// The mail.
    pub mail: Outgoing,
    /// Who wrote it (the outgoing article's author).
    pub author: String,
}

/// What an evaluation of a ticket's SLA writes: its SLA columns and its
/// one pending reminder row. Instants are in `ts` text form
/// (`crate::store::ts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaRows {
    /// `sla_state`: breached, running, paused, met or none.
    pub state: String,
    /// `sla_due_at`: the nearest due instant of a running target.
    pub due_at: Option<String>,
    /// `sla_target`: that target.
    pub target: Option<String>,
    /// The stage that goes out next, if any (it fires, the firing plans
    /// the one after).
    pub pending: Option<PendingReminder>,
    /// When it was evaluated (`created_at` of the pending row).
    pub now: String,
}

/// A reminder stage's pending timer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReminder {
    /// `s<severity>:<target>[:<cycle>]:<percent>`.
    pub key: String,
    /// When it goes out.
    pub due_at: String,
    /// When the SLA arithmetic puts it.
    pub planned_at: String,
    /// Audience names.
    pub audiences: Vec<String>,
}
