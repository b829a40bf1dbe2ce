//! Service levels: the calendars SLA clocks count on and the public
//! holidays they skip. Pure: instants in, instants out.

pub mod calendar;
pub mod holidays;
