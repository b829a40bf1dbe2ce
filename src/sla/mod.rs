//! Service levels: the policies that say which targets a ticket has, the
//! calendars SLA clocks count on, the public holidays they skip, and the
//! clocks themselves. Pure: instants in, instants out.

pub mod calendar;
pub mod clock;
pub mod holidays;
pub mod policy;
