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

diesel::table! {
    uploads (id) {
        id -> Text,
        filename -> Text,
        content_type -> Text,
        size -> BigInt,
        upload_offset -> BigInt,
        sha256 -> Nullable<Text>,
        complete -> Bool,
        tus_metadata -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        owner -> Nullable<Text>,
        multipart_id -> Nullable<Text>,
    }
}

diesel::table! {
    upload_parts (upload_id, part_index) {
        upload_id -> Text,
        part_index -> Integer,
        etag -> Text,
    }
}

diesel::joinable!(upload_parts -> uploads (upload_id));
diesel::allow_tables_to_appear_in_same_query!(uploads, upload_parts);
