//! Service levels: the policies (targets per plan and severity), the
//! calendars SLA clocks count on, the public holidays they skip, the clock
//! itself and the cron schedules of periodic jobs. Pure: instants in,
//! instants out.

pub mod calendar;
pub mod clock;
pub mod cron;
pub mod evaluate;
pub mod holidays;
pub mod policy;
