//! Service levels: the calendars SLA clocks count on, the public holidays
//! they skip and the cron schedules of periodic jobs. Pure: instants in,
//! instants out.

pub mod calendar;
pub mod cron;
pub mod holidays;
