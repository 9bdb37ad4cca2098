//! The booking funnel of a travel site that the generated users walk: its pages, what can be
//! clicked or submitted on each, and the weighted transitions between them.

use rand::Rng;
use rand::rngs::SmallRng;

/// The pages of the booking funnel. The discriminant indexes [`PAGES`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Page {
    Home,
    Search,
    Results,
    HotelDetails,
    FlightDetails,
    Deals,
    Cart,
    Checkout,
    Payment,
    Confirmation,
    Account,
    Help,
    Login,
}

/// What a page offers and where it leads.
pub(super) struct PageInfo {
    /// The `page_name` of its events.
    pub(super) name: &'static str,
    /// Click targets, so that event names are plausible for the page.
    pub(super) clicks: &'static [&'static str],
    /// The form submitted on this page, if any.
    pub(super) form: Option<&'static str>,
    /// Whether the page carries a booking in progress.
    pub(super) booking: bool,
    /// Weighted next pages: the funnel's transitions.
    pub(super) next: &'static [(Page, u32)],
}

impl Page {
    pub(super) fn info(self) -> &'static PageInfo {
        &PAGES[self as usize]
    }
}

/// Where sessions begin: mostly the home page, sometimes a deep link from an ad or an e-mail.
pub(super) const ENTRY_PAGES: &[(Page, u32)] = &[
    (Page::Home, 50),
    (Page::Search, 15),
    (Page::Deals, 10),
    (Page::Results, 10),
    (Page::HotelDetails, 10),
    (Page::Account, 5),
];

/// Every page's info, in the order of [`Page`]'s discriminants.
static PAGES: [PageInfo; 13] = [
    PageInfo {
        name: "home",
        clicks: &["search_bar", "deal_banner", "login_link", "logo"],
        form: None,
        booking: false,
        next: &[
            (Page::Search, 40),
            (Page::Deals, 15),
            (Page::Results, 10),
            (Page::Account, 8),
            (Page::Login, 7),
            (Page::Help, 5),
            (Page::Home, 5),
        ],
    },
    PageInfo {
        name: "search",
        clicks: &[
            "destination_input",
            "date_picker",
            "guests_selector",
            "search_button",
        ],
        form: Some("search_form"),
        booking: false,
        next: &[
            (Page::Results, 70),
            (Page::Search, 15),
            (Page::Home, 10),
            (Page::Help, 5),
        ],
    },
    PageInfo {
        name: "results",
        clicks: &[
            "result_card",
            "sort_by_price",
            "filter_stars",
            "next_page",
            "map_view",
        ],
        form: None,
        booking: false,
        next: &[
            (Page::HotelDetails, 40),
            (Page::FlightDetails, 25),
            (Page::Results, 15),
            (Page::Search, 15),
            (Page::Home, 5),
        ],
    },
    PageInfo {
        name: "hotel_details",
        clicks: &["photo_gallery", "room_option", "add_to_cart", "reviews_tab"],
        form: None,
        booking: false,
        next: &[
            (Page::Results, 35),
            (Page::Cart, 30),
            (Page::HotelDetails, 10),
            (Page::FlightDetails, 10),
            (Page::Deals, 10),
            (Page::Help, 5),
        ],
    },
    PageInfo {
        name: "flight_details",
        clicks: &["fare_class", "seat_map", "add_to_cart", "baggage_info"],
        form: None,
        booking: false,
        next: &[
            (Page::Results, 35),
            (Page::Cart, 30),
            (Page::HotelDetails, 15),
            (Page::FlightDetails, 10),
            (Page::Search, 10),
        ],
    },
    PageInfo {
        name: "deals",
        clicks: &["deal_card", "newsletter_signup"],
        form: None,
        booking: false,
        next: &[
            (Page::HotelDetails, 40),
            (Page::FlightDetails, 20),
            (Page::Search, 20),
            (Page::Home, 20),
        ],
    },
    PageInfo {
        name: "cart",
        clicks: &["remove_item", "apply_coupon", "proceed_to_checkout"],
        form: Some("coupon_form"),
        booking: true,
        next: &[
            (Page::Checkout, 45),
            (Page::Results, 20),
            (Page::HotelDetails, 15),
            (Page::Cart, 10),
            (Page::Home, 10),
        ],
    },
    PageInfo {
        name: "checkout",
        clicks: &[
            "traveler_details",
            "insurance_toggle",
            "continue_to_payment",
        ],
        form: Some("traveler_form"),
        booking: true,
        next: &[
            (Page::Payment, 55),
            (Page::Cart, 20),
            (Page::Login, 15),
            (Page::Help, 10),
        ],
    },
    PageInfo {
        name: "payment",
        clicks: &["card_form", "pay_now", "change_method"],
        form: Some("payment_form"),
        booking: true,
        next: &[
            (Page::Confirmation, 60),
            (Page::Payment, 15),
            (Page::Checkout, 15),
            (Page::Help, 10),
        ],
    },
    PageInfo {
        name: "confirmation",
        clicks: &["download_receipt", "add_to_calendar", "share"],
        form: None,
        booking: true,
        next: &[(Page::Home, 40), (Page::Account, 35), (Page::Search, 25)],
    },
    PageInfo {
        name: "account",
        clicks: &["my_bookings", "edit_profile", "logout"],
        form: Some("profile_form"),
        booking: false,
        next: &[
            (Page::Home, 40),
            (Page::Search, 25),
            (Page::Account, 20),
            (Page::Help, 15),
        ],
    },
    PageInfo {
        name: "help",
        clicks: &["faq_item", "contact_support", "live_chat"],
        form: Some("contact_form"),
        booking: false,
        next: &[
            (Page::Home, 40),
            (Page::Search, 25),
            (Page::Help, 20),
            (Page::Account, 15),
        ],
    },
    PageInfo {
        name: "login",
        clicks: &["email_input", "password_input", "forgot_password"],
        form: Some("login_form"),
        booking: false,
        next: &[(Page::Account, 40), (Page::Home, 30), (Page::Checkout, 30)],
    },
];

/// A page drawn from `weighted`, each with the chance of its weight.
pub(super) fn pick(rng: &mut SmallRng, weighted: &[(Page, u32)]) -> Page {
    let total: u32 = weighted.iter().map(|&(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for &(page, weight) in weighted {
        if roll < weight {
            return page;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the total weight")
}
