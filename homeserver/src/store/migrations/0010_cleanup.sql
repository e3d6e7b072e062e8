-- 0010: what goes away with a device, an account or a redacted event.
--
-- Triggers, so that every path that deletes a device, deactivates an account or redacts an
-- event (client API, admin API, federation, the appliance CLI offline) cleans up alike:
-- * a deleted device takes its pushers with it (they were set with its access token);
-- * a deactivated account loses its key backups (versions stay as deleted markers, so their
--   numbers are never reused), its cross-signing keys and its pushers;
-- * a redacted event no longer counts as an unread notification.

CREATE TRIGGER devices_delete_pushers AFTER DELETE ON devices BEGIN
    DELETE FROM pushers WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
END;

CREATE TRIGGER users_deactivated_cleanup AFTER UPDATE OF deactivated ON users
WHEN NEW.deactivated = 1 AND OLD.deactivated = 0 BEGIN
    DELETE FROM room_key_backup_keys WHERE user_id = NEW.user_id;
    UPDATE room_key_backup_versions SET deleted = 1, auth_data = '{}' WHERE user_id = NEW.user_id;
    DELETE FROM cross_signing_keys WHERE user_id = NEW.user_id;
    DELETE FROM key_signatures WHERE target_user = NEW.user_id OR signer_user = NEW.user_id;
    DELETE FROM pushers WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER events_redacted_unnotify AFTER UPDATE OF redacted_by ON events
WHEN NEW.redacted_by IS NOT NULL AND OLD.redacted_by IS NULL BEGIN
    DELETE FROM notifications
    WHERE room_id = NEW.room_id AND stream_pos = NEW.stream_pos
    AND user_id IN (SELECT state_key FROM current_state
                    WHERE room_id = NEW.room_id AND event_type = 'm.room.member');
END;
