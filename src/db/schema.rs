// One schema for both backends: portable column types only (see diesel.toml).

diesel::table! {
    users (id) {
        id -> BigInt,
        name -> Text,
        email -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
