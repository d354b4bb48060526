"""Reading user inputs (images, video, audio) with errors that name the file."""
